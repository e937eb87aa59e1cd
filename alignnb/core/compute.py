"""The CPU budget of this process and torch's thread count.

A job's thread count is part of its recipe and cache key (training is bit-identical only for a
given thread count); the budget says how many such jobs fit side by side.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

#: The CPU budget of the task a process runs in (set by the Ray engine for a sweep point's kernel).
CPUS_ENV = "ALIGNNB_CPUS"


def cpu_budget() -> int:
    """The CPUs this process may use: its task's budget (``$ALIGNNB_CPUS``), else the machine's cores."""
    budget = os.environ.get(CPUS_ENV)
    return max(1, int(budget)) if budget else (os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count."""
    import torch  # here: importing this module stays light

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
