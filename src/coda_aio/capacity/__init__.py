"""Capacity: how much memory the container has, what each terminal uses, and what happens
when it runs out (issue 23).

- ``container``: the container's memory limit and use (cgroup v2, v1, else /proc/meminfo).
- ``process_tree``: each terminal's processes and their memory, from /proc.
- ``oom``: the OOM killer's scores for terminals, and its kill count.
- ``monitor``: the sampler that ties these together for admission, /health and the page.
"""
