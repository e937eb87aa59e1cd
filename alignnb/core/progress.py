"""Progress bars that show in the notebook and, during ``alignnb run``, on the command line too.

Inside a kernel, :class:`tqdm` is ``tqdm.auto``'s bar (a widget in JupyterLab). When
``alignnb run`` executes the notebooks with papermill, the kernel's bars live in the notebook
being written, where a terminal cannot see them. So :func:`relayed` (used by the runner)
names a file in ``$ALIGNNB_PROGRESS_RELAY``; the kernel inherits the variable, and each bar
appends its state there as a JSON line at most twice a second. A thread of the runner
follows the file and draws the same bars on its standard error.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from tqdm.auto import tqdm as _auto_tqdm
from tqdm.std import tqdm as _text_tqdm

RELAY_ENV = "ALIGNNB_PROGRESS_RELAY"
RELAY_INTERVAL = 0.5  # seconds between two relayed states of one bar


class tqdm(_auto_tqdm):  # noqa: N801 (the name every module already uses)
    """``tqdm.auto.tqdm`` that also relays its state to ``$ALIGNNB_PROGRESS_RELAY`` when set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._relay_path = os.environ.get(RELAY_ENV) or None
        self._relay_sent = 0.0
        self._relay_closed = False
        super().__init__(*args, **kwargs)
        if self.disable:
            self._relay_path = None
        self._relay(force=True)

    def _relay(self, force: bool = False, closed: bool = False) -> None:
        if not self._relay_path:
            return
        now = time.monotonic()
        if not force and now - self._relay_sent < RELAY_INTERVAL:
            return
        self._relay_sent = now
        state = {"id": f"{os.getpid()}-{id(self)}", "desc": self.desc, "n": self.n, "total": self.total,
                 "unit": self.unit, "closed": closed}
        with contextlib.suppress(OSError):  # a vanished relay never breaks the computation
            with open(self._relay_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(state) + "\n")

    def reset(self, total: float | None = None) -> None:
        super().reset(total)  # also restarts the bar's clock
        self._relay(force=True)

    def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description_str(desc, refresh)
        if hasattr(self, "_relay_path"):
            self._relay(force=True)

    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        self._relay()
        return shown

    def close(self) -> None:
        if not self._relay_closed and getattr(self, "_relay_path", None):
            self._relay_closed = True
            self._relay(force=True, closed=True)
        super().close()


def _follow(path: str, stop: threading.Event, stream: Any) -> None:
    """Draw the bars whose states are appended to ``path`` until ``stop`` is set."""
    bars: dict[str, _text_tqdm] = {}
    with open(path, encoding="utf-8") as f:
        pending = ""
        while True:
            chunk = f.read()
            if not chunk:
                if stop.is_set():
                    break
                time.sleep(0.2)
                continue
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                try:
                    state = json.loads(line)
                except json.JSONDecodeError:
                    continue
                bar = bars.get(state["id"])
                if bar is None:
                    bar = bars[state["id"]] = _text_tqdm(total=state["total"], desc=state["desc"], unit=state["unit"],
                                                         file=stream, mininterval=0, dynamic_ncols=True)
                elif state["desc"] != bar.desc or state["n"] < bar.n:  # renamed or reset: the clock restarts
                    bar.set_description_str(state["desc"], refresh=False)
                    bar.reset(state["total"])
                bar.total = state["total"]
                bar.n = state["n"]
                bar.refresh()
                if state["closed"]:
                    bar.close()
                    del bars[state["id"]]
    for bar in bars.values():
        bar.close()


@contextlib.contextmanager
def relayed(enabled: bool = True, stream: Any = None) -> Iterator[str | None]:
    """Within the block, bars of child kernels started from this process are drawn on
    ``stream`` (default standard error); yields the relay file's path (None when disabled)."""
    if not enabled:
        yield None
        return
    fd, path = tempfile.mkstemp(prefix="alignnb-progress-", suffix=".jsonl")
    os.close(fd)
    previous = os.environ.get(RELAY_ENV)
    os.environ[RELAY_ENV] = path
    stop = threading.Event()
    thread = threading.Thread(target=_follow, args=(path, stop, stream or sys.stderr), daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join(timeout=5)
        if previous is None:
            os.environ.pop(RELAY_ENV, None)
        else:
            os.environ[RELAY_ENV] = previous
        with contextlib.suppress(OSError):
            os.unlink(path)
