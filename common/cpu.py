"""Is the machine otherwise idle right now? Used to read a prompt with every core when nothing else
wants one: on 2 cores llama.cpp reads a prompt ~1.8x faster with 2 threads than with 1 when the other
core is free, but 1.2-1.5x *slower* when another process holds it (threads wait for each other)."""
from __future__ import annotations

import os
import time


def runnable_others(samples: int = 3, gap_s: float = 0.002) -> int | None:
    """Tasks ready to run on the whole machine besides the caller, from /proc/loadavg's "running"
    count (the caller is one of them). The least of a few quick reads, so a thread that just woke for
    a moment does not count. None where /proc is not there (not Linux): the caller keeps its default."""
    least = None
    for i in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        least = running if least is None else min(least, running)
        if i + 1 < samples:
            time.sleep(gap_s)
    return max(0, least - 1)


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
