"""The numerical kernels of the study's processes, pinned so that the bits do not depend on the CPU.

torch picks its CPU code paths by processor, in three places, and each changes the bits of a
training run (measured in ``benchmarks/bench_train.py numerics``, 60 steps of each learner):

- ATen's vectorised kernels (``ATEN_CPU_CAPABILITY``: AVX512 here, AVX2 on older CPUs) change
  the transformer's weights; the GRU's are unchanged by it;
- MKL's BLAS (conditional numerical reproducibility, ``MKL_CBWR``) changes both learners';
- oneDNN's convolutions and recurrent cells (``ONEDNN_MAX_CPU_ISA``) change the GRU's.

:data:`PINNED` fixes all three at AVX2: the same bits on every x86-64 CPU that has AVX2
(Intel since 2013, AMD since 2015), at the speed of this machine's own choice. Pinning them at
the portable minimum (SSE4.1, ``MKL_CBWR=COMPATIBLE``, ATen ``default``) would also cover older
CPUs but trains at half the speed. Not covered: CPUs without AVX2, other architectures (ARM),
GPUs, and other torch, MKL or oneDNN versions (torch's version is part of every run key).

The settings must be in a process's environment before torch runs its first kernel. Importing
:mod:`alignnb` sets them (:func:`pin`), so notebook kernels, the engines' worker processes and
the tests all run pinned; :func:`check` refuses to train in a process where torch started
otherwise. ``ALIGNNB_NUMERICS=native`` leaves this machine's own choice (its runs get another
key: the recipe records the numerics).
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

#: The kernel settings of the ``"avx2"`` numerics (each read by its library when it first runs).
PINNED: dict[str, str] = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
#: The numerics of the study's recipes; ``"native"``: whatever this CPU chooses (not reproducible elsewhere).
DEFAULT = "avx2"
#: Environment variable that chooses the numerics of a process (``avx2`` or ``native``).
ENV = "ALIGNNB_NUMERICS"
KINDS = ("avx2", "native")


class NumericsNotPinned(RuntimeError):
    """This process's torch runs with other kernels than the recipe asks for."""


def chosen(env: MutableMapping[str, str] | None = None) -> str:
    """The numerics this process (or environment ``env``) asks for: ``$ALIGNNB_NUMERICS``, else :data:`DEFAULT`."""
    value = (os.environ if env is None else env).get(ENV, DEFAULT) or DEFAULT
    if value not in KINDS:
        raise ValueError(f"{ENV}={value!r}: must be one of {KINDS}")
    return value


def pin(env: MutableMapping[str, str] | None = None) -> str:
    """Write the kernel settings of the chosen numerics into ``env`` (default: this process's
    environment, which the processes it starts inherit); returns the numerics."""
    env = os.environ if env is None else env
    kind = chosen(env)
    if kind == "avx2":
        env.update(PINNED)
    return kind


def active() -> str:
    """The numerics torch runs with in this process: ``"avx2"`` when all three settings are in
    effect, else ``"native"`` (the ATen capability is read from torch itself)."""
    import torch  # here: importing this module stays light

    pinned = all(os.environ.get(k) == v for k, v in PINNED.items())
    return "avx2" if pinned and torch.backends.cpu.get_cpu_capability() == "AVX2" else "native"


def check(numerics: str) -> None:
    """Raise :class:`NumericsNotPinned` unless this process computes with ``numerics``."""
    if numerics == "native":
        return
    if numerics not in KINDS:
        raise ValueError(f"numerics must be one of {KINDS}, got {numerics!r}")
    if active() != numerics:
        import torch

        raise NumericsNotPinned(
            f"this process computes with torch's {torch.backends.cpu.get_cpu_capability()} kernels and "
            f"{ {k: os.environ.get(k) for k in PINNED} }, but the recipe asks for the {numerics!r} numerics "
            f"{PINNED}. torch was started before alignnb set them (import alignnb before torch), or "
            f"{ENV} is 'native', or this CPU lacks AVX2. Train through alignnb's engines or a fresh "
            "process that imports alignnb first")


def started_torch() -> bool:
    """True when torch is already imported in this process (too late for :func:`pin`)."""
    return "torch" in sys.modules
