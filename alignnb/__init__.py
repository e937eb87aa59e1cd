"""alignnb: alignment among language, vision and action representations, as a notebook study.

Stages (one module each; data flows one way, through files on disk):
demos -> train (agent) -> encoders -> metrics / analysis -> plots / widgets.
"""

from importlib import metadata as _metadata

from alignnb.core import numerics as _numerics

# the CPU kernels of every process of the study, before torch can start (alignnb.core.numerics)
_numerics.pin()

try:
    __version__ = _metadata.version("alignnb")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
