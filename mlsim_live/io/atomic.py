"""Atomic output files: write to a temporary file in the target folder, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from mlsim_live.errors import MLSimError

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"


# ``.<name>.<host>-<pid>-<hex>.tmp`` (and ``.<name>.<pid>-<hex>.tmp``, ``.<name>.<hex>.tmp``
# from earlier versions).
_TEMP_NAME = re.compile(
    r"^\.(?P<name>.+)\.(?:(?:(?P<host>[0-9a-f]{6})-)?(?P<pid>\d+)-)?[0-9a-f]{8,12}\.tmp$"
)


def host_tag() -> str:
    """Six hex digits naming this machine in temporary file names (a process id means
    nothing on another machine sharing the folder)."""
    return hashlib.sha1(socket.gethostname().encode("utf-8")).hexdigest()[:6]


def temp_path_for(path: Path) -> Path:
    """Return a fresh hidden temporary path beside ``path`` (same folder, same file system).

    The name holds the machine and the writing process's id, so a later run can tell the
    temporary file of a killed run (an orphan, see `remove_orphans`) from that of a run still
    writing.
    """
    tag = f"{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return path.parent / f".{path.name}.{tag}{TEMP_SUFFIX}"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _is_orphan(match: re.Match[str], named: bool) -> bool:
    """Whether the temporary file ``match`` describes was left by a process that is gone.

    Files of another machine are never orphans here (their process cannot be looked up).
    Without a machine tag (earlier versions) the process id is taken as this machine's, and
    without a process id either, the file is an orphan only for an output asked for by name.
    """
    if match["host"] is not None and match["host"] != host_tag():
        return False
    if match["pid"] is None:
        return named
    if match["host"] is None and not named:
        return False
    return not _process_alive(int(match["pid"]))


def remove_orphans(
    folder: str | os.PathLike[str], names: Iterable[str] = (), *, any_name: bool = False
) -> list[Path]:
    """Remove the temporary files that killed runs left in ``folder``.

    A temporary file is an orphan when the process on this machine that wrote it is gone (or,
    for the outputs ``names``, when it comes from an earlier version without a process id).
    With ``any_name``, orphans of every output are removed, not only those of ``names``: a
    killed run of another name (``demo_3`` when this run writes ``demo_4``) leaves nothing
    behind either. Each removal is logged in one line.

    Returns
    -------
    list of Path
        The files removed.
    """
    folder = Path(folder)
    wanted = set(names)
    removed: list[Path] = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry)
        if match is None or not (any_name or match["name"] in wanted):
            continue
        if not _is_orphan(match, named=match["name"] in wanted):
            continue
        with contextlib.suppress(FileNotFoundError):
            (folder / entry).unlink()
            removed.append(folder / entry)
    if removed:
        log.warning(
            "removed %d temporary file(s) left by an interrupted run in %s: %s",
            len(removed),
            folder,
            ", ".join(p.name for p in removed),
        )
    return removed


def check_folder_writable(folder: str | os.PathLike[str], option: str = "--out") -> None:
    """Raise `MLSimError` unless a file can be created in the existing ``folder``.

    Tried for real (a temporary file, removed at once), so read-only mounts, permissions and
    ACLs all count, before any work is done.
    """
    folder = Path(folder)
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".mlsim-write-check-"):
            pass
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise MLSimError(
            f"{option} {folder}: cannot write there ({reason}); expected a writable folder"
        ) from exc


def check_writable(path: str | os.PathLike[str], overwrite: bool) -> None:
    """Raise `MLSimError` if ``path`` exists and ``overwrite`` is false, or is a folder."""
    path = Path(path)
    if path.is_dir():
        raise MLSimError(f"{path}: is a folder; expected a file path for the output")
    if path.exists() and not overwrite:
        raise MLSimError(f"{path}: output already exists; expected a new path or --overwrite")


def publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``path`` at once; without ``overwrite`` never clobber a file.

    For outputs written over a long time (a run's SR file) to a `temp_path_for` path;
    `atomic_path` does the same for a file written in one go.

    Raises
    ------
    MLSimError
        ``path`` exists (it appeared meanwhile) and ``overwrite`` is false.
    """
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic and fails if ``path`` appeared meanwhile
    except FileExistsError:
        raise MLSimError(
            f"{path}: output already exists; expected a new path or --overwrite"
        ) from None
    except OSError:  # file system without hard links
        if path.exists():
            raise MLSimError(
                f"{path}: output already exists; expected a new path or --overwrite"
            ) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``path``, on error it vanishes.

    Parameters
    ----------
    path : path-like
        Final output path. Its folder must exist.
    overwrite : bool
        Replace an existing ``path``. Without it an existing output raises `MLSimError`
        (checked before and again when the file is published).

    Yields
    ------
    Path
        Hidden temporary file in the same folder as ``path``.
    """
    path = Path(path)
    check_writable(path, overwrite)
    if not path.parent.is_dir():
        raise MLSimError(f"{path.parent}: output folder does not exist; expected a folder")
    tmp = temp_path_for(path)
    try:
        yield tmp
        publish(tmp, path, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(
    path: str | os.PathLike[str],
    write: Callable[[BinaryIO], object],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``path`` atomically: ``write(file)`` fills a temporary file, flushed to disk, that
    then becomes ``path``; on error nothing is left. Return the path.

    Raises
    ------
    MLSimError
        If ``path`` exists and ``overwrite`` is false, or its folder does not exist.
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see `write_bytes_atomic`); return the path."""
    return write_bytes_atomic(path, lambda fh: fh.write(text.encode("utf-8")), overwrite=overwrite)


def write_json_atomic(
    path: str | os.PathLike[str], data: Any, *, overwrite: bool = False, indent: int = 2
) -> Path:
    """Write ``data`` as JSON to ``path`` atomically; return the path.

    Raises
    ------
    MLSimError
        If ``path`` exists and ``overwrite`` is false, or ``data`` is not JSON-serializable.
    """
    path = Path(path)
    try:
        text = json.dumps(data, indent=indent, allow_nan=True, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise MLSimError(f"{path}: cannot write JSON ({exc}); expected JSON-able data") from exc
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    log.debug("wrote %s", path)
    return path


def _json_default(obj: Any) -> Any:
    """Convert numpy scalars/arrays and paths for `json.dumps`."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")
