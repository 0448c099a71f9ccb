"""How many threads a generation should decode on, given what other processes keep busy on this machine right now.

Why: both engines' threads wait for each other at every step of a decode (torch's GNU OpenMP team, llama.cpp's
thread pool), so one thread that shares a core with another busy process — a training job, most often the user's
own, started from the Train pane — stalls the whole team many times a token. Measured here (AMD EPYC, 2 cores,
AVX2 only, bundled model + an adapter side by side, torch int4/int8, 12 tokens a round, a `poet` training job
beside it): 2 threads 0.2-3.0 tokens/s per column, whatever the job's nice level (0, 19, or SCHED_IDLE); 1 thread
8.6-9.3. Alone, 2 threads give 11.8 and 1 thread 9.2-10.4. llama.cpp: 1 token/s on 2 threads beside a training
job, 23 per column on 1. So each generation measures, before it starts, how many of the CPUs this process may use
other processes keep busy over 50 ms (its own use left out) and decodes on the rest, at least one.

torch keeps its thread count per thread (a thread that has not used torch yet starts from the last count any
thread set), so a decode sets it on the thread that runs the decode, for the time of that decode only
(`torch_threads`), and measuring happens on the caller's thread, not on core.torch_thread where loads queue.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

WINDOW = 0.05
"""Seconds of /proc/stat watched before a generation (its only cost: this much later to start)."""

_torch_limit: int | None = None
_limit_lock = threading.Lock()


def allowed_cpus() -> set[int] | None:
    """The CPUs this process may run on (None where the OS does not say: macOS, Windows)."""
    try:
        return os.sched_getaffinity(0)
    except AttributeError:
        return None


def busy_cpus(allowed: set[int], window: float = WINDOW) -> float:
    """How many of the allowed CPUs other processes keep busy over the next `window` seconds (0 when unknown).
    Time the hypervisor gives other machines (steal) is not counted: fewer threads would not get it back."""

    def sample() -> tuple[float, float, float]:
        total = busy = 0.0
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *values = line.split()
                if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in allowed:
                    continue
                fields = [float(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
                total += sum(fields)
                busy += fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
        own = os.times()
        return total, busy, (own.user + own.system) * os.sysconf("SC_CLK_TCK")

    try:
        total0, busy0, own0 = sample()
        time.sleep(window)
        total1, busy1, own1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    elapsed = total1 - total0
    if elapsed <= 0:
        return 0.0
    return max(0.0, ((busy1 - busy0) - (own1 - own0)) / elapsed * len(allowed))


@dataclass(frozen=True)
class Threads:
    """The threads a generation decodes on, and how many it would have had with the machine to itself."""

    n: int
    alone: int

    @property
    def reduced(self) -> bool:
        """Other processes kept CPUs busy, so this decode runs on fewer threads than it would alone."""
        return self.n < self.alone

    def to_dict(self) -> dict[str, int]:
        return {"threads": self.n, "threads_alone": self.alone}

    def note(self) -> str:
        """For a footer: why this decode may be slower than usual ("1/2 threads, CPU busy"); empty when not."""
        return f"{self.n}/{self.alone} threads, CPU busy" if self.reduced else ""


def free_threads(limit: int | None = None) -> Threads:
    """Threads for the next generation: the CPUs this process may use less those other processes keep busy, at
    least 1 and at most `limit` (the engine's own thread count) when given."""
    allowed = allowed_cpus()
    cpus = len(allowed) if allowed is not None else os.cpu_count() or 1
    alone = cpus if limit is None else max(1, min(cpus, limit))
    if allowed is None:  # nothing to measure with (no affinity, no /proc/stat): as alone
        return Threads(alone, alone)
    return Threads(max(1, min(alone, cpus - round(busy_cpus(allowed)))), alone)


def torch_limit() -> int:
    """torch's thread count for this process as it started (its default, or OMP_NUM_THREADS), read once, before any
    decode has set a thread's count."""
    global _torch_limit
    with _limit_lock:
        if _torch_limit is None:
            import torch

            _torch_limit = torch.get_num_threads()
        return _torch_limit


def free_torch_threads(device: Any = "cpu") -> Threads | None:
    """free_threads for torch (at most its own count) when it computes on the CPU (device: a torch.device or its
    type), None for an accelerator. Measures on the calling thread; sets nothing."""
    return free_threads(torch_limit()) if getattr(device, "type", device) == "cpu" else None


@contextlib.contextmanager
def torch_threads(fitted: Threads | None) -> Iterator[None]:
    """Run the block on fitted.n torch threads on this thread, then give the thread its own count back; None: as
    it is."""
    import torch

    before = torch.get_num_threads()  # also sets the thread up first: a count set before that could be overwritten
    n = before if fitted is None else fitted.n
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)
