"""What this process may use of the machine."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's, a job scheduler's or a
    Ray worker's share), which can be fewer than the machine has (``os.cpu_count``). Thread
    pools are sized from it, so that workers sharing a machine do not oversubscribe it."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1
