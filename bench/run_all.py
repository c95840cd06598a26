"""Run every benchmark in turn, each printing its figures beside its own baseline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = [
    "bench_terminal.py",
    "bench_vs_others.py",  # with --ttyd / --terminado-path when they are installed (terminal_speed.md)
    "bench_pty_read.py",
    "bench_browser_render.py",
    "bench_session_end.py",
    "bench_install_priority.py",
    "bench_proxy.py",
    "bench_page_load.py",
    "bench_project_sync.py",
    "soak_project_sync.py",
    "bench_file_transfer.py",
    "bench_capacity.py",
    "soak_long.py",
]

if __name__ == "__main__":
    here = Path(__file__).parent
    failed = 0
    for name in BENCHES:
        print(f"\n=== {name} ===", flush=True)
        failed |= subprocess.call([sys.executable, str(here / name)])
    sys.exit(failed)
