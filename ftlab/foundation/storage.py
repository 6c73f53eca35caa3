"""Where ftlab keeps what it builds and measures, and how it writes it.

Converted models, the pretrained tiny base and finished runs all live under one cache
folder, and every JSON result is written atomically, so an interrupted notebook or a
crash never leaves half a file that a later lookup would trust.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ftlab.errors import CacheError


def folder_from_env(variable: str, default: Callable[[], Path]) -> Path:
    """The folder an environment variable names (else ``default()``), created if missing; a
    CacheError naming the variable when it cannot be a folder (it names a file, or a place
    this user cannot write)."""
    value = os.environ.get(variable, "").strip()
    path = Path(value).expanduser() if value else default()
    origin = f"{variable}={value!r}" if value else f"the default folder {path}"
    if path.exists() and not path.is_dir():
        raise CacheError(f"{origin} is a file, not a folder; point {variable} at a folder (created if missing) "
                         f"or unset it")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(f"{origin} cannot be created ({err.strerror or err}); point {variable} at a folder you "
                         f"can write to, or unset it") from None
    return path


def cache_dir() -> Path:
    """Where converted models and finished runs live (FTLAB_CACHE overrides ~/.cache/ftlab)."""
    return folder_from_env("FTLAB_CACHE", lambda: Path.home() / ".cache" / "ftlab")


def data_dir() -> Path:
    """The workbook's shipped data: the finance splits and the pretrained tiny base
    (FTLAB_DATA overrides the repository's data/)."""
    return Path(os.environ.get("FTLAB_DATA") or Path(__file__).resolve().parents[2] / "data")


def move_aside(path: Path, why: str) -> Path:
    """Rename a damaged file to ``<name>.corrupt-<timestamp>`` beside it (kept, for a look,
    never read again as a result) and return the new path."""
    target = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        n += 1
    os.replace(path, target)
    return target


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temp file in the same folder, fsync, then rename over ``path``: a
    reader (another learner's process on a shared folder too) sees the old file or the new
    one, never half of one, and a crash or Ctrl-C mid-write leaves no truncated file that a
    later lookup would trust. The one atomic writer of ftlab."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """``data`` as indented JSON, written by :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, json.dumps(data, indent=1).encode("utf-8"))


def build_folder_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder in a temp dir beside ``target`` and rename it in one step.

    An interrupted conversion then never leaves a half-written model that later loads
    would trust.
    """
    if (target / "config.json").is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
