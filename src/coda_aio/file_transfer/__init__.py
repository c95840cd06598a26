"""Files in and out of terminals (issue 12).

In: a file pasted or dropped on a terminal is uploaded to ``~/uploads`` (``uploads``, named by
``names``), and the page types its path at the prompt. Out: ``coda-download FILE`` in a terminal
registers that one file in a private spool (``download_spool``, written by the command in
``coda_download``) and prints an escape sequence carrying only a random id; the page fetches the
file once by that id. ``routes`` holds the two HTTP routes and installs the command at startup.
"""
