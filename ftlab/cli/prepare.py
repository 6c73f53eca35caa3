"""``ftlab prepare``: get a workshop room ready before it starts.

``ftlab prepare`` executes each chapter notebook headless with papermill (``PROFILE`` and
``FTLAB_PROFILE`` set to the profile), which trains every run the chapter makes into the run
cache: the room's machines, sharing that cache, then open each chapter in seconds. Done
chapters are recorded inside the runs folder they filled (``RunCache.prepare_state_path``),
keyed by profile and the notebook's hash: an interrupted ``prepare`` resumes where it
stopped, an edited chapter is prepared again, and pointing ``FTLAB_RUNS`` at a new folder
prepares every chapter into it.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from ftlab.cli.common import CliError, table
from ftlab.setup.presets import resolve_model
from ftlab.config.profiles import profile_name
from ftlab.runs.cache import RunCache
from ftlab.foundation.storage import write_json_atomic

PREPARE_MODELS = ("smollm2-135m", "tiny-pretrained")
"""What ``prepare`` builds before the chapters: the converted SmolLM2 and the pretrained tiny base."""


def default_notebooks() -> Path:
    """The workbook's notebooks/ beside the package (an editable install from a clone), else ./notebooks."""
    beside = Path(__file__).resolve().parents[2] / "notebooks"
    return beside if beside.is_dir() else Path.cwd() / "notebooks"


def chapter_notebooks(folder: Path, wanted: Sequence[str] | None) -> list[Path]:
    """The chapter notebooks (``NN_name.ipynb``, ``NNb_name.ipynb``) in ``folder``, all or those whose number or
    name is in ``wanted`` ('1', '01' and '01_first_finetune' name the same chapter)."""
    found = sorted(folder.glob("[0-9][0-9]*_*.ipynb")) if folder.is_dir() else []
    if not found:
        raise CliError(f"no chapter notebooks (NN_name.ipynb) in {folder}; run ftlab prepare from a clone of the "
                       f"workbook (cd into it)")
    if not wanted:
        return found
    chosen = []
    for want in wanted:
        key = want.removesuffix(".ipynb")
        key = key.zfill(2) if key.isdigit() else key
        match = [p for p in found if p.stem == key or p.stem.split("_")[0] == key]
        if not match:
            raise CliError(f"--chapters {want}: no such chapter; the chapters are "
                           f"{', '.join(p.stem.split('_')[0] for p in found)} ({', '.join(p.stem for p in found)})")
        chosen += [p for p in match if p not in chosen]
    return sorted(chosen)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _read_state(path: Path) -> dict[str, Any]:
    """The prepare state; an unreadable one is started afresh (it only saves time)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        return state if isinstance(state, dict) and isinstance(state.get("done"), dict) else {"done": {}}
    except (OSError, ValueError):
        return {"done": {}}


def _run_files(cache: RunCache) -> set[str]:
    return {p.name for p in cache.files()}


def execute_chapter(notebook: Path, profile: str, output: Path) -> None:
    """Run one chapter headless with papermill, as ``make demo`` does: parameter ``PROFILE``
    and ``FTLAB_PROFILE`` both set to ``profile``, from the notebook's own folder."""
    try:
        import papermill  # only prepare needs it: a [dev] dependency, which `make setup` installs
    except ImportError:
        raise CliError("ftlab prepare executes the chapters with papermill, which is not installed: "
                       "pip install papermill (make setup installs it)") from None

    os.environ["FTLAB_PROFILE"] = profile  # the kernel inherits it
    papermill.execute_notebook(str(notebook), str(output), parameters={"PROFILE": profile}, kernel_name="python3",
                               cwd=str(notebook.parent), progress_bar=False, log_output=False)


def cmd_prepare(args: argparse.Namespace) -> int:
    profile = args.profile or profile_name()
    notebooks = chapter_notebooks(Path(args.notebooks) if args.notebooks else default_notebooks(), args.chapters)
    models = PREPARE_MODELS if args.models is None else args.models
    cache = RunCache()
    cache.check_writable()  # a folder the room cannot fill is said now, not after the first chapter
    print(f"ftlab prepare: profile {profile}, {len(notebooks)} chapters, run cache {cache.folder}", flush=True)
    for name in models:
        started = time.perf_counter()
        path = resolve_model(name)
        print(f"model {name}: ready in {time.perf_counter() - started:.0f} s ({path})", flush=True)
    state_path = cache.prepare_state_path()
    state = _read_state(state_path)
    rows: list[list[Any]] = []
    for i, notebook in enumerate(notebooks, start=1):
        key, digest = f"{profile}/{notebook.name}", _sha256(notebook)
        done = state["done"].get(key)
        counter = f"[{i}/{len(notebooks)}] {notebook.stem}"
        if done and done.get("sha256") == digest and not args.restart:
            print(f"{counter}: prepared before ({done['runs']} runs, {done['minutes']:.1f} min), skipped", flush=True)
            rows.append([notebook.stem, done["runs"], done["minutes"], "before"])
            continue
        print(f"{counter}: executing with profile {profile} ...", flush=True)
        before, started = _run_files(cache), time.perf_counter()
        out_dir = Path(tempfile.mkdtemp(prefix="ftlab-prepare-"))
        try:
            execute_chapter(notebook, profile, out_dir / notebook.name)
        except KeyboardInterrupt:
            print(f"\ninterrupted in {notebook.stem}: its finished runs are in the run cache; run the same command "
                  f"again to resume (chapters done are skipped)", file=sys.stderr)
            _print_prepare_table(rows)
            return 130
        except Exception as err:
            where = f" in cell {err.cell_index}" if hasattr(err, "cell_index") else ""
            what = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
            print(f"{counter}: failed{where}: {what}\nThe executed notebook is kept at {out_dir / notebook.name}. "
                  f"Fix the cause and run the same command again: chapters done are skipped.", file=sys.stderr)
            _print_prepare_table(rows)
            return 1
        shutil.rmtree(out_dir, ignore_errors=True)
        minutes = (time.perf_counter() - started) / 60
        added = len(_run_files(cache) - before)
        state["done"][key] = {"sha256": digest, "runs": added, "minutes": round(minutes, 2),
                              "finished": datetime.datetime.now().isoformat(timespec="seconds")}
        write_json_atomic(state_path, state)
        print(f"{counter}: done in {minutes:.1f} min, {added} new runs in the cache", flush=True)
        rows.append([notebook.stem, added, round(minutes, 2), "now"])
    _print_prepare_table(rows)
    return 0


def _print_prepare_table(rows: list[list[Any]]) -> None:
    if not rows:
        return
    total = ["total", sum(r[1] for r in rows), round(sum(r[2] for r in rows), 2), ""]
    print("\n" + table(rows + [total], ["chapter", "runs", "minutes", "prepared"]))
