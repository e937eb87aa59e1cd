"""Atomic writes, content-hashed cache keys and the one cached step (:func:`cached`).

Every artifact is written to a temporary sibling and renamed into place, so a crash or an
error never leaves a half-written file or folder where a reader would find it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np


def _canonical(obj: Any) -> Any:
    """A JSON-serialisable, order-stable view of ``obj`` for hashing."""
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    raise TypeError(f"cannot hash a value of type {type(obj).__name__}: {obj!r}")


def cache_key(params: Mapping[str, Any], length: int = 16) -> str:
    """Hex digest of the canonical JSON of ``params`` (everything a result depends on)."""
    text = json.dumps(_canonical(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_hash(path: str | os.PathLike, length: int = 16, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex, truncated)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:length]


TEMP_SUFFIX = ".tmp"


_UMASK: int | None = None


def umask() -> int:
    """The process's umask (read once: setting it to read it is not thread-safe)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return _UMASK


def host_name() -> str:
    """This machine's short host name as it appears in temporary file names (see :func:`temp_prefix`)."""
    return socket.gethostname().split(".")[0].replace("-", "_") or "host"


def temp_prefix(final: Path) -> str:
    """Temporary names carry the writer's host and pid (``.<name>.<host>-<pid>.<random>.tmp``).

    So :func:`remove_stale_temps` can tell a killed writer's leftovers from a live writer's
    file, even in a data folder that several machines share.
    """
    return f".{final.name}.{host_name()}-{os.getpid()}."


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove temporary files and folders left in ``folder`` by writers that no longer run.

    A temporary name holds its writer's pid; one whose process is gone (on this machine) was
    killed before it could rename or clean up. Returns what was removed.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(f".*{TEMP_SUFFIX}"):
        parts = tmp.name.split(".")
        host, _, pid = parts[-3].rpartition("-") if len(parts) >= 4 else ("", "", "")
        if host != host_name() or not pid.isdigit() or _alive(int(pid)):
            continue  # another machine's, a live writer's, or not ours to judge
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: The errors of a failing write that a user can fix (space, quota, the device), by errno.
WRITE_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
                errno.EIO: "an input/output error of the device", errno.EROFS: "the file system is read-only"}


class WriteFailed(OSError):
    """A result could not be written (a full disk, a quota, a failing device). The message names
    the path and the free space; nothing is left at the path (the atomic writers clean up)."""

    def __str__(self) -> str:
        return self.strerror


def free_space(folder: str | os.PathLike) -> str:
    """The free space of the file system that holds ``folder``, readable ("1.2 GB free")."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    return f"{free / 1e9:.1f} GB free" if free >= 1e8 else f"{free / 1e6:.1f} MB free"


def _raise_write_failed(exc: BaseException, final: Path) -> None:
    """Re-raise ``exc`` as :class:`WriteFailed` naming ``final`` if it is one of :data:`WRITE_ERRORS`."""
    if isinstance(exc, OSError) and not isinstance(exc, WriteFailed) and exc.errno in WRITE_ERRORS:
        raise WriteFailed(exc.errno, f"cannot write {final}: {WRITE_ERRORS[exc.errno]} ({free_space(final.parent)} "
                          f"there); nothing was left at that path: free space (or set ALIGNNB_DATA to a larger "
                          "disk) and run again, finished work is kept") from exc


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False, exist_ok: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success rename it to ``final``.

    On an exception the temporary folder is removed and nothing appears at ``final``. If
    ``final`` appeared meanwhile (another process made the same result), ``exist_ok=True``
    keeps that one and drops ours; ``overwrite=True`` replaces it; otherwise FileExistsError.
    The folder gets the permissions of a folder made with ``mkdir`` (mkdtemp's are 0700).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final.parent)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(final), suffix=TEMP_SUFFIX, dir=final.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~umask())
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_file(f)
        if final.exists():
            if exist_ok and not overwrite:
                shutil.rmtree(tmp, ignore_errors=True)
                return
            if not overwrite:
                raise FileExistsError(f"{final} already exists")
            old = final.with_name(f".{final.name}.old")
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                tmp.rename(final)
            except OSError:  # another process renamed its folder into place first
                if not (exist_ok and final.exists()):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        _fsync_dir(final.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_write_failed(exc, final)
        raise


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``final`` for writing; rename it into place on success.

    The data reach the disk (fsync) before the rename, so after a crash ``final`` holds the
    old or the new content, never a torn file. The file gets the permissions of a normally
    created one (0666 minus the umask; mkstemp's are 0600, unreadable in a shared folder).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final.parent)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(final), suffix=TEMP_SUFFIX, dir=final.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _raise_write_failed(exc, final)
        raise


class CorruptCache(ValueError):
    """A cached file exists but cannot be read (truncated, corrupted or of another format)."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str):
        self.path, self.problem, self.fix = Path(path), problem, fix
        super().__init__(f"cached file {path} cannot be read ({problem}). {fix}")

    def __reduce__(self):  # raised in a worker process, it must cross back whole
        return (CorruptCache, (self.path, self.problem, self.fix))


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, waiting: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block; other processes wait.

    Used where two processes would otherwise compute the same cached result at once: the
    second waits for the first and then finds its result. ``waiting`` is printed if it has to
    wait. The lock is ``filelock``'s (an ``fcntl.flock`` on Unix; the file stays in place).
    """
    import filelock  # here, so that importing this module stays light

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        if waiting:
            print(waiting, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


# --------------------------------------------------------------------------------------
# the cached step
# --------------------------------------------------------------------------------------

T = TypeVar("T")


def key_of(kind: str | None, inputs: Mapping[str, Any], length: int = 16) -> str:
    """The cache key of a step: the hash of ``{"kind": kind, **inputs}`` (of ``inputs`` alone when
    ``kind`` is None: the embeddings' key predates the kind field and keeps its form)."""
    if kind is not None and "kind" in inputs:
        raise ValueError(f"the inputs of a {kind!r} step must not hold a 'kind' of their own")
    return cache_key(inputs if kind is None else {"kind": kind, **inputs}, length)


def _try_load(load: Callable[[Path], T], path: Path) -> tuple[bool, T | None]:
    """(True, value) if ``path`` holds a result that loads; (False, None) if there is none yet.

    A result that is there but damaged raises :class:`CorruptCache` (from ``load``)."""
    if not path.exists():
        return False, None
    try:
        return True, load(path)
    except FileNotFoundError:  # e.g. a run folder whose run is not finished
        return False, None


def cached(kind: str | None, inputs: Mapping[str, Any], build: Callable[[Mapping[str, Any]], T],
           load: Callable[[Path], T], write: Callable[[T, Path], None] | None, *,
           path: Callable[[str], str | os.PathLike], force: bool = False, what: str = "",
           lock: Callable[[Path], str | os.PathLike] | None = None,
           discard: Callable[[Path], None] | None = None, must_exist: str = "") -> T:
    """The result of ``build(inputs)``, cached at ``path(key_of(kind, inputs))``: the one cache step.

    The key hashes exactly the ``inputs`` the builder receives, so nothing the builder reads
    from them can be left out of the key (what it takes from elsewhere, such as a worker count
    or a progress bar, must not change the result). The policy, the same for every cache:

    1. a result that exists and loads is returned without a lock (read-only caches work);
       ``load`` raises :class:`CorruptCache` for a damaged one, FileNotFoundError for none;
    2. otherwise (or with ``force``) the lock ``lock(path)`` (default: ``.<name>.lock`` beside
       it) is taken, and the result looked for again: another process may have made it while
       this one waited;
    3. a damaged result is reported with a RuntimeWarning and made again; ``discard(path)``
       (if given) clears what a rebuild must not reuse, also with ``force``;
    4. ``build(inputs)`` makes the result and ``write(result, path)`` writes it atomically
       (temporary file or folder, then rename: :func:`atomic_file`, :func:`atomic_dir`);
       ``write=None`` means ``build`` writes its own files (a resumable training run does);
    5. the result is loaded back from ``path``, so a fresh result and a cached one are the same.

    With ``must_exist`` (a message saying which stage makes it) nothing is built: a missing
    result raises FileNotFoundError with that message and a damaged one its CorruptCache.
    """
    final = Path(path(key_of(kind, inputs)))
    what = what or f"cached {kind or 'result'}"
    if not force:
        try:
            found, value = _try_load(load, final)
        except CorruptCache:
            if must_exist:
                raise
            found, value = False, None  # made again below, under the lock, with a warning
        if found:
            return value  # type: ignore[return-value]
    if must_exist:
        raise FileNotFoundError(must_exist)
    lock_path = Path(lock(final)) if lock else final.with_name(f".{final.name}.lock")
    with file_lock(lock_path, waiting=f"another process is making {final}; waiting for it to finish"):
        rebuild = force
        if not force:
            try:
                found, value = _try_load(load, final)
                if found:
                    return value  # type: ignore[return-value]
            except CorruptCache as exc:
                warnings.warn(f"{exc.problem} in the {what} {final}: making it again", RuntimeWarning, stacklevel=2)
                rebuild = True
        if rebuild and discard is not None:
            discard(final)
        result = build(MappingProxyType(dict(inputs)))
        if write is not None:
            write(result, final)
        value = load(final)
        record_build(final, kind, lock_path.parent)
        return value


#: The ledger of builds, beside each cache step's lock: one JSON line per result made (not per result read).
BUILDS_LEDGER = ".builds.jsonl"


def record_build(final: Path, kind: str | None, folder: Path | None = None) -> None:
    """Append that this process made ``final`` to the :data:`BUILDS_LEDGER` in ``folder`` (default
    ``final``'s folder; :func:`cached` uses its lock's): one short line written with O_APPEND, so
    processes sharing a local folder never tear each other's lines (on NFS appends are not atomic). The soaks and tests read
    it (:func:`builds`) to check that every result was built once."""
    line = json.dumps({"path": final.name, "kind": kind, "built_by": f"{socket.gethostname()}:{os.getpid()}",
                       "at": round(time.time(), 3)}) + "\n"
    try:  # diagnostic only: a full disk here must not turn a finished result into an error
        fd = os.open((folder or final.parent) / BUILDS_LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def builds(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every build recorded under ``folder`` (all ledgers, recursively), oldest first."""
    rows = [json.loads(line) | {"folder": str(p.parent)} for p in Path(folder).rglob(BUILDS_LEDGER)
            for line in p.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["at"])


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")


def read_json(path: str | os.PathLike, fix: str = "") -> Any:
    """The JSON in ``path``; a file that is not valid JSON raises :class:`CorruptCache` (with ``fix``)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptCache(path, f"not valid JSON: {exc}", fix or f"delete it (rm {path}) and rerun") from exc


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class _NullWriter:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def silenced_stdout() -> Iterator[None]:
    """Discard everything printed to ``sys.stdout`` inside the block.

    minigrid's level generator prints "Sampling rejected: ..." on every rejected layout;
    wrap environment resets in this so none of it reaches the user.
    """
    with contextlib.redirect_stdout(_NullWriter()):
        yield
