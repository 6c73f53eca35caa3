"""RunCache: the one place that knows where finished runs live and how they are found again.

A chapter re-executed, a Playground pressed twice, a search trial repeated, a workshop room
opening a chapter its teacher prepared: each finds a run here instead of training it again.
That only holds if the key says everything that decides the run, so the key is a hash of

* the config (its fields that differ from their defaults: adding a field with a default
  to RunConfig leaves every existing key, and so every cached run, valid);
* the bytes of the data it reads (an edited data file is a new experiment);
* the identity of the model's weights (a rebuilt base model is a new experiment);
* for a packed run only, the packer's name (:data:`ftlab.setup.data.PACKER`): the same
  examples packed another way are other rows, while every unpacked run keeps its key;
* :data:`KEY_VERSION` (bumped only when the meaning of the key itself changes).

The cache is a folder that several processes and people may share (``FTLAB_RUNS`` on a
workshop hub). So every write is atomic (a reader sees a whole file or none), a file this
version cannot read because a newer ftlab wrote it is skipped with one line and left
exactly as it is, and only a file that is not a run at all (not JSON) is moved aside to
``quarantine/``, kept for a look. Pruned search runs, which must never answer a
``train()`` of their config, live apart under ``pruned/``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ftlab.config.run_config import RunConfig
from ftlab.errors import CacheError
from ftlab.foundation.storage import cache_dir, folder_from_env, move_aside, write_json_atomic
from ftlab.runs.record import SCHEMA_VERSION, Run, UnknownSchema
from ftlab.setup.data import PACKER, data_fingerprint
from ftlab.setup.presets import model_identity

KEY_VERSION = 1
"""Version of what the run key hashes; a change here makes every earlier key unreachable."""
PRUNED = "pruned"
"""Sub-folder of pruned search runs (read by searches, never by ``train``)."""
QUARANTINE = "quarantine"
"""Sub-folder where files that are not runs at all are moved, kept for a look."""
PREPARE = "prepare"
"""Sub-folder of ``ftlab prepare``'s state: it belongs to the runs folder it filled."""


def default_folder() -> Path:
    """FTLAB_RUNS, else <cache>/runs; made absolute, so every process (a kernel runs in
    ``notebooks/``) means the same folder."""
    return folder_from_env("FTLAB_RUNS", lambda: cache_dir() / "runs").resolve()


def run_key(config: RunConfig, data_sha256: str | None, model: str) -> str:
    """The cache key of a run: 16 hex digits over config, data bytes, model identity,
    :data:`KEY_VERSION` and, when it packs, the packer (see the module docstring for why
    each is in it)."""
    parts = {"config": config.hash(), "data": data_sha256, "model": model, "key": KEY_VERSION}
    if config.packing:  # only here, so that no unpacked run's key changes
        parts["packer"] = PACKER
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Listing:
    """What one look at the folder found: the runs it can read, and one line for each file
    it passed over (written by another schema version, or not a run)."""

    runs: list[tuple[Path, Run]]
    skipped: list[str]


class RunCache:
    """The runs folder: key, read, write, list, remove; see the module docstring."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder).expanduser().resolve() if folder else default_folder()

    def __repr__(self) -> str:
        return f"RunCache({str(self.folder)!r})"

    # --- keys and paths ---------------------------------------------------------------------
    @staticmethod
    def key_for(config: RunConfig) -> tuple[str, str | None]:
        """(run key, data fingerprint) of ``config`` as its files and model are now."""
        sha = data_fingerprint(config)
        return run_key(config, sha, model_identity(config.model)), sha

    def path(self, key: str, *, pruned: bool = False) -> Path:
        return (self.folder / PRUNED if pruned else self.folder) / f"{key}.json"

    # --- reading ------------------------------------------------------------------------------
    def read(self, path: Path) -> Run | None:
        """The run in ``path``; None, with one warning line, when another schema version wrote
        it (left untouched) or it is not a run (moved to ``quarantine/``)."""
        try:
            return Run.load(path)
        except UnknownSchema as why:
            warnings.warn(f"run cache: skipped {path.name}: {why}", stacklevel=3)
            return None
        except CacheError as err:
            moved = self.quarantine(path)
            warnings.warn(f"run cache: {err}. Moved it to {moved}; this run trains again when asked.", stacklevel=3)
            return None

    def load_completed(self, key: str) -> Run | None:
        """The completed run saved under ``key`` (see :meth:`key_for`), if any."""
        path = self.path(key)
        if not path.is_file():
            return None
        run = self.read(path)
        if run is None or run.status != "completed":
            return None
        run.from_cache = True
        return run

    def load_pruned(self, key: str) -> Run | None:
        """The pruned run saved under ``key`` (a search's shortcut), if any and readable."""
        path = self.path(key, pruned=True)
        try:
            run = Run.load(path) if path.is_file() else None
        except (CacheError, UnknownSchema):
            run = None  # a pruned run is only a shortcut: the trial trains instead
        if run is not None:
            run.from_cache = True
        return run

    def load_any(self, key: str) -> Run | None:
        """The run behind a search's finished trial: completed, else pruned."""
        return self.load_completed(key) or self.load_pruned(key)

    def files(self) -> Iterator[Path]:
        """The run files of the folder (not pruned, quarantined or temporary ones), oldest first."""
        if not self.folder.is_dir():
            return iter(())
        return iter(sorted(self.folder.glob("*.json"), key=lambda p: (p.stat().st_mtime, p.name)))

    def listing(self) -> Listing:
        """Every readable run, and a line for each file passed over; nothing is moved."""
        runs, skipped = [], []
        for path in self.files():
            try:
                runs.append((path, Run.load(path)))
            except UnknownSchema as why:
                skipped.append(f"{path.name}: {why}")
            except CacheError as err:
                skipped.append(f"{path.name}: {err}")
        return Listing(runs, skipped)

    def find(self, ident: str) -> Path:
        """The run file a user names: a path, a key, or a unique prefix of one (CacheError if
        none or several)."""
        as_path = Path(ident).expanduser()
        if as_path.suffix == ".json" and as_path.is_file():
            return as_path
        matches = [p for p in self.files() if p.stem.startswith(ident)] if ident else []
        exact = [p for p in matches if p.stem == ident]
        if exact or len(matches) == 1:
            return (exact or matches)[0]
        if matches:
            raise CacheError(f"run {ident!r} is ambiguous: {', '.join(p.stem for p in matches)}; give more of the key")
        raise CacheError(f"no run {ident!r} in {self.folder}; `ftlab runs list` shows the saved runs")

    # --- writing ------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Refuse, before any training, a folder this process cannot save a run into."""
        origin = f"the runs folder {self.folder}"
        fix = "point FTLAB_RUNS (or runs_dir=) at a folder you can write to, or ask whoever owns it for write access"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".ftlab-write-check.", dir=self.folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise CacheError(f"{origin} cannot be written ({err.strerror or err}); {fix}") from None

    def save(self, run: Run, *, pruned: bool = False) -> Path | None:
        """Write ``run`` atomically under its key (its key is stored in it), unless a newer
        ftlab's run already sits there: that file is someone's (a teacher's prepared run on a
        shared folder), this version cannot read it, and so it must not replace it either.
        Then nothing is written, one warning says why, and None is returned. (A newer file
        landing between this check and the rename would still be replaced: the window is
        one rename, and closing it would need a lock on a shared disk.)"""
        if not run.key:
            run.key, _ = self.key_for(run.config)
        path = self.path(run.key, pruned=pruned)
        if path.is_file():
            try:
                Run.load(path)
            except UnknownSchema as why:
                warnings.warn(f"run cache: not saved over {path.name}: {why}", stacklevel=3)
                return None
            except CacheError:
                pass  # not a run at all: the fresh run takes its place
        return write_json_atomic(path, run.to_dict())

    def save_or_warn(self, run: Run, *, pruned: bool = False) -> Path | None:
        """:meth:`save`, but a failure (the disk filled, the folder turned read-only during
        training) is a warning, never the loss of the trained run the caller still holds."""
        try:
            return self.save(run, pruned=pruned)
        except OSError as err:
            warnings.warn(f"run cache: could not save the trained run to {self.folder} ({err}); the run is returned "
                          f"but not cached: save it with RunCache(<a writable folder>).save(run)", stacklevel=3)
            return None

    def remove(self, ident: str) -> Path:
        path = self.find(ident)
        path.unlink()
        return path

    def quarantine(self, path: Path) -> Path:
        """Move a file that is not a run to ``quarantine/`` (kept, never read again)."""
        target = self.folder / QUARANTINE / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        return move_aside(target, "corrupt")

    def prepare_state_path(self) -> Path:
        """Where ``ftlab prepare`` records the chapters it executed into this folder."""
        return self.folder / PREPARE / "state.json"
