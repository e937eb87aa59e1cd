"""The explorer of notebook 05 as a web app: Voilà serves it with widgets only, no code.

    alignnb explore [--quick] [--port 8866] [--data-dir DIR]

It serves the study that is cached: the full study (after ``make study``) if there is one,
else the quick one (after ``alignnb run --quick``); ``--quick`` asks for the quick one. If
neither is cached it says which command to run first. The notebook that Voilà runs is
notebook 05 with its parameters injected by papermill (``prepare_only``: nothing runs until
a browser opens the page), written to ``runs/explore-<name>/``. Its heatmap goes to that
folder's ``figures/``, never to the committed ``figures/``. Cells tagged ``reading-group``
(the questions and the "Try this" cell) are left out of the dashboard.

Voilà is a kept Jupyter project (voila-dashboards): it executes the notebook in a kernel of
its own per page and renders only outputs and widgets, so the explorer works as it does in
JupyterLab, with no second implementation.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import nbformat
import papermill

from alignnb.core import paths
from alignnb.run.settings import StudyConfig
from alignnb.run.stages import load_study

DASHBOARD_NOTEBOOK = "05_explore.ipynb"
SKIPPED_TAG = "reading-group"


class StudyNotCached(FileNotFoundError):
    """No study whose explorer could be served is cached; the message names the command to run."""


def cached_study(quick: bool | None = None, profile: str | None = None,
                 data_dir: str | os.PathLike | None = None) -> StudyConfig:
    """The configuration of a study whose agent, sentences and embeddings are all cached.

    With ``quick=None`` the full study is preferred and the quick one is the fallback; True
    or False asks for that one only. Raises :class:`StudyNotCached` naming the command that
    makes it.
    """
    choices = [False, True] if quick is None else [bool(quick)]
    reasons = []
    for q in choices:
        values = {"quick": q, **({"profile": profile} if profile else {})}
        cfg = StudyConfig.from_dict(values)
        try:
            load_study(cfg, data_dir)
            return cfg
        except (FileNotFoundError, ValueError, KeyError) as exc:
            reasons.append(f"{'quick' if q else 'full'} study: {exc}")
    folder = paths.data_dir(data_dir)
    how = {None: "`make study` (the full study) or `alignnb run --quick` (a quick one, a few minutes)",
           False: "`make study`", True: "`alignnb run --quick`"}[quick if quick is None else bool(quick)]
    raise StudyNotCached(f"no cached study to explore in {folder}: run {how} first, then `make explore`. "
                         "What is missing: " + "; ".join(reasons))


def dashboard_notebook(cfg: StudyConfig, data_dir: str | os.PathLike | None = None,
                       folder: str | os.PathLike | None = None) -> Path:
    """Notebook 05 with the parameters of ``cfg`` injected (interactive, figures kept out of
    ``figures/``), without the reading-group cells; returns its path. Nothing is executed."""
    from alignnb.run.notebooks import notebook_inputs, notebook_parameters, run_name

    source = paths.notebooks_dir() / DASHBOARD_NOTEBOOK
    name = run_name(cfg.quick, {"profile": cfg.profile} if cfg.profile != StudyConfig().profile else {})
    folder = Path(folder) if folder else paths.runs_dir() / f"explore-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    given = notebook_inputs(notebook_parameters(source), cfg, {"data_dir": str(Path(data_dir).resolve()) if data_dir else ""},
                            str((folder / "figures").resolve()))
    given["interactive"] = True
    nb = nbformat.read(source, as_version=4)
    nb.cells = [c for c in nb.cells if SKIPPED_TAG not in c.get("metadata", {}).get("tags", [])]
    trimmed = folder / "source.ipynb"
    nbformat.write(nb, trimmed)
    out = folder / DASHBOARD_NOTEBOOK
    papermill.execute_notebook(str(trimmed), str(out), parameters=given, prepare_only=True, kernel_name="python3",
                               progress_bar=False, log_output=False)
    trimmed.unlink()
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def voila_command(notebook: Path, port: int) -> list[str]:
    """The Voilà command line that serves ``notebook`` on 127.0.0.1:``port``, quietly, with
    encrypted kernel channels and no tracebacks on the page."""
    voila = shutil.which("voila", path=str(Path(sys.executable).parent)) or shutil.which("voila")
    if voila is None:
        raise FileNotFoundError("Voilà is not installed: run `make install` (or pip install voila)")
    return [voila, str(notebook), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1", "--Voila.port_retries=0",
            "--show_tracebacks=False", "--KernelManager.transport_encryption=auto",
            f"--Voila.root_dir={notebook.parent}", "--Voila.log_level=WARN"]


def wait_until_listening(port: int, process: subprocess.Popen | None = None, timeout: float = 120) -> None:
    """Block until something accepts connections on 127.0.0.1:``port``; raise if the server
    process exits first or time runs out. (A GET of the page itself would run the notebook.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the dashboard server exited with code {process.returncode} before it listened "
                               f"on port {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"the dashboard did not listen on port {port} within {timeout:.0f} s")


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Raise ValueError naming ``port`` if the explorer could not listen there (in use, or not allowed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: a closing socket is no clash
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
            raise ValueError(f"port {port} on {host} {why}: choose another with --port"
                             + (", or stop what listens there" if exc.errno == errno.EADDRINUSE else "")) from None


@contextlib.contextmanager
def serving(cfg: StudyConfig, port: int | None = None, data_dir: str | os.PathLike | None = None,
            folder: str | os.PathLike | None = None, log: str | os.PathLike | None = None) -> Iterator[str]:
    """Serve the explorer of ``cfg`` with Voilà for the duration of the block; yields its URL.

    The server's output goes to ``log`` (default ``<folder>/voila.log``); it is stopped with
    its kernels when the block ends.
    """
    notebook = dashboard_notebook(cfg, data_dir, folder)
    port = port or free_port()
    env = dict(os.environ, **({"ALIGNNB_DATA": str(Path(data_dir).resolve())} if data_dir else {}))
    log_path = Path(log) if log else notebook.parent / "voila.log"
    with open(log_path, "wb") as out:
        process = subprocess.Popen(voila_command(notebook, port), stdout=out, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
        url = f"http://127.0.0.1:{port}/"
        try:
            wait_until_listening(port, process)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


def find_chromium() -> tuple[str, str] | None:
    """Paths of a system Chromium and its chromedriver (Debian's ``chromium`` and
    ``chromium-driver``), or None. Nothing is downloaded."""
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


CHROMIUM_MISSING = ("no system Chromium with chromedriver: install Debian's packages with "
                    "`apt-get install chromium chromium-driver` (as .ci/run does) to run the browser tests")


def open_browser(width: int = 1280, height: int = 2400) -> Any:
    """A headless Selenium Chrome driver on the system Chromium (see :func:`find_chromium`)."""
    found = find_chromium()
    if found is None:
        raise FileNotFoundError(CHROMIUM_MISSING)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=found[1]), options=options)


def wait_for_score(driver: Any, timeout: float = 300, changed_from: str | None = None) -> str:
    """The text of the explorer's score line once the page shows one (a value or a message)
    that differs from ``changed_from``; raises TimeoutError with the page text otherwise."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    text = None
    while time.monotonic() < deadline:
        found = driver.find_elements(By.CSS_SELECTOR, ".alignnb-score")
        if found:
            text = found[0].text.strip()
            if text and text != changed_from:
                return text
        time.sleep(0.25)
    body = driver.find_element(By.TAG_NAME, "body").text[-2000:]
    raise TimeoutError(f"the explorer showed no (new) score within {timeout:.0f} s; last {text!r}; page: {body}")


def screenshot(cfg: StudyConfig, path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """Serve the explorer of ``cfg``, open it in headless Chromium, and save its default view as PNG."""
    path = Path(path)
    with serving(cfg, data_dir=data_dir) as url:
        driver = open_browser()
        try:
            driver.get(url)
            wait_for_score(driver)
            time.sleep(1.0)  # the heatmap image arrives with the score; let it paint
            from selenium.webdriver.common.by import By

            path.parent.mkdir(parents=True, exist_ok=True)
            driver.find_element(By.CSS_SELECTOR, ".alignnb-explorer").screenshot(str(path))
        finally:
            driver.quit()
    return path
