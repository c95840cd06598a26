"""Projects survive a redeploy: every git repository under ``~/projects`` is backed up to the
workspace after each commit (history as git bundles, the working tree's other files as
objects, a manifest as the commit point) and restored at boot.

- ``syncer``: the background task: the loop and its scheduling, status, shutdown grace;
- ``sync``: one sync of one project, in the order that keeps the previous backup whole;
- ``restore``: one restore, tolerating a backup that lost files;
- ``store``: the backups in the workspace: manifests, moving one aside, garbage;
- ``records``: what is kept on this machine (the last manifest, stat cache, requests);
- ``manifest``: what a backup is, and what a manifest must keep to be trusted;
- ``layout``: where backups live in the workspace (one folder per app);
- ``transfers``: moving objects with a fixed pool and a bounded number of bytes in flight;
- ``workspace_files``: the workspace files API, streamed, timing out on no progress;
- ``git_repo``: what is asked of git;
- ``command``: ``coda-sync`` (status, forget, resume) in the terminals.
"""
