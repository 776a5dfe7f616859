"""How many cells this machine can run at once.

Each pytest-xdist worker runs one cell at a time: a QEMU guest beside `stap -p4` and gcc. On
a machine with many cores and little memory per core, one worker per core runs out of memory
instead of running slower. So `-n auto` takes the smaller of the cores and what memory
allows: MemAvailable / (a guest's memory + QEMU's own + the peak a compile container used).
The compile peak is measured: every compile container's peak memory (its cgroup's) is kept,
and the largest seen so far is used; before any was measured, a conservative default.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from harness import cache
from harness.settings import cache_dir

logger = logging.getLogger(__name__)

QEMU_OVERHEAD_MB = 256  # QEMU's own memory beside the guest's RAM (TCG translation cache, devices)
DEFAULT_COMPILE_PEAK_MB = 1536  # before a compile was measured on this machine
DEFAULT_GUEST_MB = 1024


def _measurements_path() -> Path:
    return cache_dir() / "measurements.json"


def compile_peak_mb() -> tuple[int, bool]:
    """(peak MiB, measured?) of a compile container on this machine."""
    entry = cache.read_entry(_measurements_path())
    if entry and int(entry.get("compile_peak_mb", 0)) > 0:
        return int(entry["compile_peak_mb"]), True
    return DEFAULT_COMPILE_PEAK_MB, False


def record_compile_peak(megabytes: int) -> None:
    if megabytes <= 0:
        return
    current, measured = compile_peak_mb()
    if not measured or megabytes > current:
        cache.write_entry(_measurements_path(), {"compile_peak_mb": megabytes})


def container_peak_mb(container_id: str, stats: dict[str, object] | None) -> int:
    """A container's peak memory: docker's max_usage (cgroup v1) or the cgroup v2 memory.peak."""
    memory = dict(stats.get("memory_stats") or {}) if stats else {}  # type: ignore[call-overload]
    if memory.get("max_usage"):
        return int(memory["max_usage"]) // (1024 * 1024)
    for path in (Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.peak"),
                 Path(f"/sys/fs/cgroup/docker/{container_id}/memory.peak"),
                 Path(f"/sys/fs/cgroup/memory/docker/{container_id}/memory.max_usage_in_bytes")):
        try:
            return int(path.read_text().strip()) // (1024 * 1024)
        except (OSError, ValueError):
            continue
    return 0


def _cgroup_room_mb() -> int | None:
    """What this process's memory cgroup still allows (a container or CI job with a limit),
    or None without a limit. cgroup v2: memory.max - memory.current; v1: limit - usage."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:
            return None
        return max(0, int(limit) - usage) // (1024 * 1024)
    return None


def available_mb() -> int:
    """Memory a run can use: the kernel's MemAvailable, or less under a cgroup limit."""
    available = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) // 1024
    except OSError:
        pass
    room = _cgroup_room_mb()
    return min(available, room) if room is not None and available else (room or available)


def workers(guest_mb: int = DEFAULT_GUEST_MB) -> tuple[int, str]:
    """(workers for -n auto, why)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    peak, measured = compile_peak_mb()
    per_worker = guest_mb + QEMU_OVERHEAD_MB + peak
    memory = available_mb()
    by_memory = max(1, memory // per_worker) if memory else cores
    chosen = max(1, min(cores, by_memory))
    limit = "cores" if chosen == cores else "memory"
    why = (f"{chosen} worker(s), limited by {limit}: {cores} core(s); {memory} MiB available / "
           f"{per_worker} MiB a worker (guest {guest_mb} + QEMU {QEMU_OVERHEAD_MB} + compile peak {peak}, "
           f"{'measured' if measured else 'not measured yet: a default'}) = {by_memory}")
    return chosen, why
