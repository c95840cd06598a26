"""Projects survive a redeploy: every git repository under ``~/projects`` is mirrored to the
workspace after each commit (working tree + history as git bundles) and restored at boot.

- ``workspace_files``: the workspace files API calls (mkdirs, import, export, list, delete);
- ``git_repo``: what is asked of git (files to sync, refs, bundles, restoring a repository);
- ``manifest``: what a synced project looks like in the workspace, and where it lives there;
- ``syncer``: the background task (watch refs, upload what changed, restore what is missing).
"""
