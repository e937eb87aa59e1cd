"""The engine of a run, chosen once: ``alignnb run --engine local|ray [--address ADDR]``.

The runner passes the choice to the notebooks as two parameters (``engine``,
``engine_address``); a notebook builds the engine with :func:`make_engine` and hands it to the
stage functions. Stage code never reads an environment variable to find its engine.
"""

from __future__ import annotations

from alignnb.core.engines import Engine, InProcess, Processes

#: The engines a run can choose.
ENGINES = ("local", "ray")


def make_engine(name: str = "local", address: str | None = None, workers: int | None = None) -> Engine:
    """The engine called ``name``: ``"local"`` (side-by-side worker processes on this machine;
    ``workers=1``: in this process) or ``"ray"`` (Ray tasks on the cluster at ``address``, or on
    a local instance when it is empty). Ray is imported only for ``"ray"``."""
    if name == "local":
        return InProcess() if workers == 1 else Processes(workers)
    if name == "ray":
        from alignnb.run.ray_engine import RayEngine  # only here: the local engine never imports Ray

        return RayEngine(address or None)
    raise ValueError(f"engine {name!r}: choose one of {list(ENGINES)}")
