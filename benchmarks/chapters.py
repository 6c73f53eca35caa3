"""Minutes per chapter: execute every notebook with papermill in one profile, from an empty
run cache, and record how long each took.

    python benchmarks/chapters.py                 # cpu profile, executed copies in out/chapters/
    python benchmarks/chapters.py --in-place      # re-execute the committed notebooks themselves
    python benchmarks/chapters.py --chapters 02 03
    python benchmarks/chapters.py --chapters 00 --solutions-only   # a chapter's solutions alone

Each chapter gets a fresh, empty run cache (so no chapter is timed on another's runs);
converted models and the pretrained tiny base stay in the usual cache, since they are
built once per machine (their build time is reported by chapter 00). Writes
``benchmarks/results/chapters_<profile>.json``; the README in this folder records the
table. A benchmark, not a test: the budget is five minutes a chapter on the `cpu`
profile, two cores.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import nbformat
import papermill

from ftlab.training.train import environment
from provenance import record  # benchmarks/provenance.py: the commit and processor measured
from provenance import provenance

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def run_chapter(notebook: Path, output: Path, profile: str, runs: str, extra_env: dict[str, str] | None = None) -> float:
    """Execute one notebook with the run cache ``runs`` (and ``extra_env`` in its kernel's
    environment); return its wall-clock seconds."""
    env = {"FTLAB_PROFILE": profile, "FTLAB_RUNS": runs, **(extra_env or {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        started = time.perf_counter()
        papermill.execute_notebook(str(notebook), str(output), parameters={"PROFILE": profile}, kernel_name="python3",
                                   cwd=str(notebook.parent), progress_bar=False)
        seconds = time.perf_counter() - started
        strip_injected_parameters(output)
        record_execution(output, profile, seconds)
        return seconds
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def solutions_of(notebook: Path) -> Path:
    """A chapter's solutions notebook (``notebooks/solutions/<chapter>_solutions.ipynb``), which may not exist."""
    return notebook.parent / "solutions" / f"{notebook.stem}_solutions.ipynb"


def strip_injected_parameters(path: Path) -> None:
    """Make an executed chapter committable: drop papermill's ``PROFILE = "cpu"`` cell
    (committed, it would pin nbval in CI, ``FTLAB_PROFILE=ci``, to the laptop workload; the
    outputs stay the cpu run's and the chapter's own ``PROFILE = None`` cell decides at the
    next run) and the input and output paths papermill records, which name this machine's
    folders (``/work/...``) in a file that is read on GitHub."""
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    for key in ("input_path", "output_path"):
        nb.metadata.get("papermill", {}).pop(key, None)
    drop_orphan_widget_state(nb)
    nbformat.write(nb, path)


def record_execution(path: Path, profile: str, seconds: float) -> None:
    """Write into the notebook's metadata (``ftlab.executed``) the profile, minutes, CPU (or GPU) and commit its
    outputs came from: two machines' numbers differ by kernel numerics, so a reader of the committed chapter
    knows which machine printed them, and a learner whose numbers differ knows why."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.setdefault("ftlab", {})["executed"] = {"profile": profile, "minutes": round(seconds / 60, 2),
                                                       **provenance()}
    nbformat.write(nb, path)


def drop_orphan_widget_state(nb: nbformat.NotebookNode) -> None:
    """Keep only the saved widget models that a displayed widget uses, directly or through
    another model. papermill carries the input notebook's widget state over to the output,
    so the state of widgets from earlier executions (a progress bar of a run the chapter no
    longer makes) would otherwise pile up in the file and show, trusted, in JupyterLab."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state")
    if state is None:
        return
    stack = [o["data"][WIDGET_VIEW]["model_id"] for c in nb.cells for o in c.get("outputs", [])
             if WIDGET_VIEW in o.get("data", {})]
    kept: set[str] = set()
    while stack:
        model = stack.pop()
        if model in kept or model not in state:
            continue
        kept.add(model)
        stack += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[model]))
    for model in set(state) - kept:
        del state[model]
    if not state:
        del nb.metadata["widgets"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=("ci", "cpu", "gpu"))
    parser.add_argument("--chapters", nargs="*", help="chapter numbers as in the file names, 07b too (default: all)")
    parser.add_argument("--in-place", action="store_true", help="overwrite the committed notebooks with the executed ones")
    parser.add_argument("--solutions-only", action="store_true",
                        help="execute only the chapters' solutions notebooks, each on an empty run cache (for a "
                             "chapter whose committed outputs stand; a solutions notebook re-creates what it needs)")
    args = parser.parse_args()
    chapters = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb") if not args.chapters or p.name.split("_")[0] in args.chapters)
    out = ROOT / "out" / "chapters"
    out.mkdir(parents=True, exist_ok=True)
    result_path = ROOT / "benchmarks" / "results" / f"chapters_{args.profile}.json"
    # a run over some chapters updates their rows and keeps the others'
    minutes: dict[str, float] = json.loads(result_path.read_text())["minutes"] if result_path.is_file() else {}
    for notebook in chapters:
        # executed into out/ first: a chapter that fails must not overwrite the committed notebook
        # with papermill's error banner and its injected parameters; its solutions notebook runs
        # after it on the same run cache, as a learner opens it, and is timed apart
        with tempfile.TemporaryDirectory(prefix="ftlab-runs-") as runs:
            for path in (solutions_of(notebook),) if args.solutions_only else (notebook, solutions_of(notebook)):
                if not path.is_file():
                    continue
                seconds = run_chapter(path, out / path.name, args.profile, runs)
                if args.in_place:
                    os.replace(out / path.name, path)
                minutes[path.stem] = round(seconds / 60, 2)
                print(f"{path.stem:50s} {minutes[path.stem]:5.2f} min", flush=True)
    record(result_path, {"profile": args.profile, "minutes": dict(sorted(minutes.items())), "budget_minutes": 5,
                         "measured_on": measured_on(minutes), "run_cache": "empty per chapter", "env": environment()})
    print(f"written: {result_path.relative_to(ROOT)}")


def measured_on(minutes: dict[str, float]) -> dict[str, dict[str, str]]:
    """Per notebook, the CPU (or GPU), commit and time of the execution its minutes come from, read from the
    notebook's own metadata (``ftlab.executed``): a run over some chapters on one host keeps the other
    chapters' minutes, so the file's single provenance does not name every chapter's host."""
    hosts = {}
    for stem in minutes:
        path = next(iter(NOTEBOOKS.glob(f"{stem}.ipynb")), None) or next(iter(NOTEBOOKS.glob(f"solutions/{stem}.ipynb")), None)
        executed = json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("ftlab", {}).get("executed", {}) if path else {}
        hosts[stem] = {k: executed[k] for k in ("cpu", "gpu", "commit", "recorded") if executed.get(k)} or {
            "cpu": "not recorded (executed before notebooks recorded their host)"}
    return hosts


if __name__ == "__main__":
    main()
