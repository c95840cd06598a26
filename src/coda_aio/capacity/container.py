"""The container's memory: its limit and what is used of it, as the kernel accounts it.

Inside a container /proc/meminfo shows the host's memory; the limit that the OOM killer
enforces is the memory cgroup's. Use is the cgroup's charge minus its inactive file cache
(the "working set", as kubelet and ``docker stats`` count it): cache the kernel can drop
under pressure is not memory a new session would lack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# cgroup v1 writes "no limit" as the largest page-aligned 63-bit number.
_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class ContainerMemory:
    limit: int  # bytes
    used: int  # bytes
    source: str  # "cgroup v2", "cgroup v1" or "meminfo"
    cgroup: Path | None = None  # the cgroup whose limit applies (None for meminfo)

    @property
    def available(self) -> int:
        return max(0, self.limit - self.used)

    def describe(self) -> dict:
        return {"limit_bytes": self.limit, "used_bytes": self.used, "available_bytes": self.available,
                "source": self.source}


def read_container_memory(cgroup_root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc")) -> ContainerMemory:
    """The memory limit that applies to this process, and its use; blocking file reads."""
    physical = _meminfo(proc)
    own = _own_cgroups(proc)
    for reader in (_cgroup_v2, _cgroup_v1):
        found = reader(cgroup_root, own)
        if found is not None and found.limit < physical.limit:
            return found
    return physical


def _own_cgroups(proc: Path) -> dict[str, str]:
    """Controller ("" for the v2 hierarchy) -> this process's cgroup path."""
    paths: dict[str, str] = {}
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _ancestors(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder and each parent's up to the mount, nearest first."""
    folder = mount / path.lstrip("/")
    chain = []
    while True:
        chain.append(folder)
        if folder == mount or mount not in folder.parents:
            return chain
        folder = folder.parent


def _cgroup_v2(root: Path, own: dict[str, str]) -> ContainerMemory | None:
    if "" not in own:
        return None
    for mount in (root, root / "unified"):
        # The tightest limit on the way up applies; its cgroup's charge covers all below it.
        best: ContainerMemory | None = None
        for folder in _ancestors(mount, own[""]):
            raw = _read(folder / "memory.max")
            if raw is None or raw == "max":
                continue
            current = _read_int(folder / "memory.current")
            if current is None:
                continue
            used = max(0, current - _stat(folder / "memory.stat").get("inactive_file", 0))
            if best is None or int(raw) < best.limit:
                best = ContainerMemory(int(raw), used, "cgroup v2", folder)
        if best is not None:
            return best
    return None


def _cgroup_v1(root: Path, own: dict[str, str]) -> ContainerMemory | None:
    if "memory" not in own:
        return None
    chain = [folder for folder in _ancestors(root / "memory", own["memory"]) if (folder / "memory.stat").exists()]
    if not chain:
        return None  # not mounted where /proc/self/cgroup says (a container sees its own as the root)
    # hierarchical_memory_limit: the tightest limit of this cgroup and its parents; the charge
    # to compare with it is that of the cgroup that set it (it covers its siblings too).
    limit = _stat(chain[0] / "memory.stat").get("hierarchical_memory_limit")
    if limit is None or limit >= _UNLIMITED:
        return None
    holder = next((f for f in chain if _read_int(f / "memory.limit_in_bytes") == limit), chain[0])
    usage = _read_int(holder / "memory.usage_in_bytes")
    if usage is None:
        return None
    stat = _stat(holder / "memory.stat")
    used = max(0, usage - stat.get("total_inactive_file", stat.get("inactive_file", 0)))
    return ContainerMemory(limit, used, "cgroup v1", holder)


def _meminfo(proc: Path) -> ContainerMemory:
    fields = {}
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            fields[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    total = fields.get("MemTotal", 0)
    available = fields.get("MemAvailable", fields.get("MemFree", 0))
    return ContainerMemory(total, max(0, total - available), "meminfo")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    raw = _read(path)
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


def _stat(path: Path) -> dict[str, int]:
    values = {}
    for line in (_read(path) or "").splitlines():
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[name] = int(value)
    return values
