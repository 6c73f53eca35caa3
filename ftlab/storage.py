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
from pathlib import Path
from typing import Any, Callable


def cache_dir() -> Path:
    """Where converted models and finished runs live (FTLAB_CACHE overrides ~/.cache/ftlab)."""
    root = os.environ.get("FTLAB_CACHE") or Path.home() / ".cache" / "ftlab"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write JSON to a temp file in the same folder, fsync, then rename over ``path``: a
    reader sees the old file or the new one, never half of one (a crash or Ctrl-C mid-write
    would otherwise leave a truncated run that a later cache lookup trusts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
