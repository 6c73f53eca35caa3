"""The ``ftlab`` command: prepare a workshop room, browse the run cache, predict memory, train.

Everything here is one plain function call of the package, reachable without a notebook::

    ftlab prepare [--profile cpu|gpu|ci] [--chapters 01 02 ...]   # before a workshop
    ftlab runs list | show ID | remove ID | export ID --format csv|json|tensorboard
    ftlab estimate --model 7B --method qlora --batch 1 --seq 2048 [--checkpointing] [--optim NAME] [--bf16]
    ftlab fits [--batch 1 --seq 2048 --gpus 16 24 48 80]
    ftlab train CONFIG.json

``ftlab prepare`` executes each chapter notebook headless with papermill (``PROFILE`` and
``FTLAB_PROFILE`` set to the profile), which trains every run the chapter makes into the run
cache: the room's machines, sharing that cache, then open each chapter in seconds. Done
chapters are recorded in ``<cache>/prepare.json`` (with the notebook's hash, so an edited
chapter is prepared again), so an interrupted ``prepare`` resumes where it stopped.

Errors ftlab raises on purpose (``FtlabError``) are printed as one line and exit with 1.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from .config import OPTIMIZERS, RunConfig
from .errors import CacheError, ConfigFileError, FtlabError
from .memory import MODEL_SIZES, GiB, MiB, estimate, fits_table, model_architecture
from .models import PRESETS, resolve_model
from .profiles import PROFILES, profile_name
from .run import Run, runs_dir
from .storage import cache_dir, write_json_atomic
from .train import train
from .version import __version__

PREPARE_MODELS = ("smollm2-135m", "tiny-pretrained")
"""What ``prepare`` builds before the chapters: the converted SmolLM2 and the pretrained tiny base."""
STATE_FILE = "prepare.json"
"""Chapters ``prepare`` finished, per profile, in the cache folder."""


class CliError(FtlabError, ValueError):
    """A command-line argument that names nothing usable (no such run, chapter or file)."""


# --- output helpers ------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Plain-text columns: numbers right-aligned, text left-aligned."""
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] in (None, "") for row in rows) and rows != []
               for i in range(len(header))]
    lines = []
    for r in cells:
        lines.append("  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip())
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def size(n: int | None) -> str:
    """Bytes as MiB below a GiB, else GiB."""
    if n is None:
        return "-"
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB"


# --- prepare --------------------------------------------------------------------------------------


def default_notebooks() -> Path:
    """The workbook's notebooks/ beside the package (an editable install from a clone), else ./notebooks."""
    beside = Path(__file__).resolve().parent.parent / "notebooks"
    return beside if beside.is_dir() else Path.cwd() / "notebooks"


def chapter_notebooks(folder: Path, wanted: Sequence[str] | None) -> list[Path]:
    """The chapter notebooks (``NN_name.ipynb``) in ``folder``, all or those whose number or
    name is in ``wanted`` ('1', '01' and '01_first_finetune' name the same chapter)."""
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb")) if folder.is_dir() else []
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


def _run_files() -> set[str]:
    return {p.name for p in runs_dir().glob("*.json")}


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
    print(f"ftlab prepare: profile {profile}, {len(notebooks)} chapters, run cache {runs_dir()}", flush=True)
    for name in models:
        started = time.perf_counter()
        path = resolve_model(name)
        print(f"model {name}: ready in {time.perf_counter() - started:.0f} s ({path})", flush=True)
    state_path = cache_dir() / STATE_FILE
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
        before, started = _run_files(), time.perf_counter()
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
        added = len(_run_files() - before)
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


# --- runs -----------------------------------------------------------------------------------------


def find_run(ident: str) -> Path:
    """The saved run a command names: a file path, a config hash, or a unique prefix of one."""
    as_path = Path(ident).expanduser()
    if as_path.suffix == ".json" and as_path.is_file():
        return as_path
    folder = runs_dir()
    exact = folder / f"{ident}.json"
    if exact.is_file():
        return exact
    matches = sorted(p for p in folder.glob(f"{ident}*.json")) if ident else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CliError(f"run {ident!r} is ambiguous: {', '.join(p.stem for p in matches)}; give more of the hash")
    raise CliError(f"no run {ident!r} in {folder}; `ftlab runs list` shows the saved runs")


def _steps(run: Run) -> int:
    return max((r["step"] for r in run.history), default=0)


def cmd_runs_list(args: argparse.Namespace) -> int:
    folder = runs_dir()
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
    rows = []
    for path in files:
        try:
            run = Run.load(path)
        except CacheError:
            rows.append([path.stem, "", "", "unreadable", None, None])
            continue
        status = run.status + (f" ({run.metrics['diverged']})" if run.metrics.get("diverged") else "")
        rows.append([path.stem, run.label, run.config.model, status, _steps(run), run.metrics.get("final_eval_loss")])
    if rows:
        print(table(rows, ["hash", "label", "model", "status", "steps", "final eval loss"]))
    print(f"{len(rows)} runs in {folder}" + ("" if rows else ": train one (ftlab train CONFIG.json, or a notebook)"))
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    path = find_run(args.id)
    run = Run.load(path)
    cfg = run.config
    print(f"run {path.stem}{f' ({run.label})' if run.label else ''}: {run.status}, {_steps(run)} steps  [{path}]")
    print(f"model {cfg.model}, {cfg.method}, batch {cfg.per_device_train_batch_size} x {cfg.max_seq_length} tokens, "
          f"learning rate {cfg.learning_rate:g} ({cfg.lr_scheduler_type}), seed {cfg.seed}")
    if run.metrics:
        print("metrics:")
        for key, value in run.metrics.items():
            print(f"  {key:28s}{_cell(value)}")
    if run.evals:
        print("eval loss by step: " + ", ".join(f"{e['step']}: {e['eval_loss']:.4g}" for e in run.evals))
    if run.memory:
        parts = ("weights", "gradients", "optimizer", "activations")
        print("memory: " + ", ".join(f"{k} {size(getattr(run.memory, k))}" for k in parts)
              + f", total {size(run.memory.total)}")
    print("config (ftlab train reads it back):")
    print(cfg.to_json())
    return 0


def cmd_runs_remove(args: argparse.Namespace) -> int:
    path = find_run(args.id)
    path.unlink()
    print(f"removed {path}")
    return 0


HISTORY_COLUMNS = ("step", "loss", "learning_rate", "grad_norm", "weight_norm", "tokens", "tokens_per_second",
                   "step_time", "eval_loss")

TENSORBOARD_SCALARS = {"loss": "train/loss", "learning_rate": "train/learning_rate", "grad_norm": "train/grad_norm",
                       "weight_norm": "train/weight_norm", "tokens_per_second": "train/tokens_per_second"}
"""History key -> TensorBoard tag, named as a Trainer run with ``report_to="tensorboard"`` names them."""


def history_rows(run: Run) -> list[dict[str, Any]]:
    """One row per step (step 0 too, for its eval loss), train and eval values side by side."""
    rows: dict[int, dict[str, Any]] = {r["step"]: dict(r) for r in run.history}
    for e in run.evals:
        rows.setdefault(e["step"], {"step": e["step"]})["eval_loss"] = e["eval_loss"]
    return [rows[s] for s in sorted(rows)]


def write_tensorboard(run: Run, folder: Path) -> Path:
    """Event files that ``tensorboard --logdir folder`` shows: train/loss, train/learning_rate,
    train/grad_norm (and weight norm, tokens/s) and eval/loss by step, plus the config as text."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise CliError(f"the TensorBoard export needs the tensorboard package ({err}); pip install tensorboard") from None
    writer = SummaryWriter(log_dir=str(folder))
    try:
        for row in run.history:
            for key, tag in TENSORBOARD_SCALARS.items():
                if row.get(key) is not None:
                    writer.add_scalar(tag, row[key], row["step"])
        for e in run.evals:
            writer.add_scalar("eval/loss", e["eval_loss"], e["step"])
        writer.add_text("config", "```\n" + run.config.to_json() + "\n```")
    finally:
        writer.close()
    return folder


def cmd_runs_export(args: argparse.Namespace) -> int:
    path = find_run(args.id)
    run = Run.load(path)
    default = {"csv": f"{path.stem}.csv", "json": f"{path.stem}.json", "tensorboard": f"tensorboard/{path.stem}"}
    out = args.out or default[args.format]
    if args.format == "tensorboard":
        folder = write_tensorboard(run, Path(out))
        print(f"wrote TensorBoard events to {folder}; view them with: tensorboard --logdir {folder.parent}")
        return 0
    if args.format == "json":
        text = json.dumps(run.to_dict(), indent=1) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(history_rows(run))
        text = buffer.getvalue()
    if out == "-":
        sys.stdout.write(text)
    else:
        Path(out).write_text(text, encoding="utf-8")
        print(f"wrote {out} ({args.format}, run {path.stem})")
    return 0


# --- estimate and fits ----------------------------------------------------------------------------


def cmd_estimate(args: argparse.Namespace) -> int:
    config = RunConfig(model=args.model if args.model not in MODEL_SIZES else "smollm2-135m",
                       lora_r=0 if args.method == "full" else args.lora_r, lora_alpha=2 * max(args.lora_r, 1),
                       load_in_4bit=args.method == "qlora", optim=args.optim, bf16=args.bf16,
                       gradient_checkpointing=args.checkpointing, per_device_train_batch_size=args.batch,
                       max_seq_length=args.seq)
    if args.model in MODEL_SIZES:
        arch = MODEL_SIZES[args.model]
        what = f"{args.model} ({arch.source}, {arch.parameter_count() / 1e9:.2f}B parameters)"
    else:
        # tiny-pretrained is the tiny architecture: read it without pretraining it first
        name = "tiny" if args.model == "tiny-pretrained" else args.model
        resolve_model(name)  # a missing folder or an unreachable hub id: its own clear error
        arch = model_architecture(name)
        what = f"{args.model} ({arch.parameter_count() / 1e6:.1f}M parameters)"
    b = estimate(config, model_config=arch)
    method = {"full": "full fine-tune", "lora": f"LoRA r={config.lora_r} on {', '.join(config.lora_target_modules)}",
              "qlora": f"QLoRA (NF4 base) r={config.lora_r} on {', '.join(config.lora_target_modules)}"}[args.method]
    extras = [config.optim] + (["bf16 autocast"] if args.bf16 else []) + (["gradient checkpointing"] if args.checkpointing else [])
    print(f"one training step of {what}: {method}, batch {args.batch} x {args.seq} tokens, {', '.join(extras)}")
    for key in ("weights", "gradients", "optimizer", "activations"):
        print(f"  {key:12s}{size(getattr(b, key)):>12s}")
    print(f"  {'total':12s}{size(b.total):>12s}")
    print("as ftlab trains it: fp32 weights (bf16 means autocast), no CUDA context or allocator slack; "
          "`ftlab fits` shows bf16 weights on a GPU")
    return 0


def cmd_fits(args: argparse.Namespace) -> int:
    rows = fits_table(model_sizes=args.models, gpus_gib=args.gpus, batch=args.batch, seq_len=args.seq,
                      gradient_checkpointing=not args.no_checkpointing)
    header = ["model", "source", "method", "total GiB"] + [f"{g} GiB" for g in args.gpus]
    body = [[r["model"], r["source"], r["method"], r["total_gib"]] + [r[f"fits_{g}GiB"] for g in args.gpus] for r in rows]
    print(f"what fits: one step of batch {args.batch} x {args.seq} tokens, "
          f"{'with' if not args.no_checkpointing else 'without'} gradient checkpointing, 10% of each card kept free")
    print(table(body, header))
    print("full = bf16 weights + gradients, fp32 AdamW moments; lora = bf16 base + fp32 r=16 adapters on every "
          "linear layer; qlora = the same on an NF4 base (ftlab.memory.fits)")
    return 0


# --- train ----------------------------------------------------------------------------------------


def read_config(path: Path) -> RunConfig:
    """A RunConfig from a JSON file: ``RunConfig.to_json()`` output, or a saved run (its config)."""
    if not path.is_file():
        raise CliError(f"{path}: no such config file; write one with RunConfig(...).to_json(), or copy the config "
                       f"that `ftlab runs show ID` prints")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not UTF-8 text; save the config as UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return RunConfig.from_json(text, source=str(path))  # raises ConfigFileError naming line and column
    if isinstance(data, dict) and "config" in data and "history" in data:
        print(f"{path} is a saved run: training its config again", flush=True)
        data = data["config"]
    return RunConfig.from_dict(data)


def cmd_train(args: argparse.Namespace) -> int:
    config = read_config(Path(args.config))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".* diverged \(")  # said below, as one plain line
        run = train(config, retrain=args.retrain, label=args.label or "", runs_dir=args.runs)
    m = run.metrics
    where = Path(args.runs or runs_dir()) / f"{config.hash()}.json"
    source = "from the run cache" if run.from_cache else run.status
    facts = [f"{_steps(run)} steps"]
    if "final_train_loss" in m:
        facts.append(f"final train loss {m['final_train_loss']:.4g}")
    if "final_eval_loss" in m:
        facts.append(f"eval loss {m['initial_eval_loss']:.4g} -> {m['final_eval_loss']:.4g} (best {m['best_eval_loss']:.4g})")
    if "exact_match" in m:
        facts.append(f"exact match {m['exact_match']:.3g}")
    if "seconds_per_step" in m:
        facts.append(f"{m['seconds_per_step']:.3g} s/step")
    print(f"run {config.hash()}{f' ({run.label})' if run.label else ''}: {source}; {', '.join(facts)}")
    if m.get("diverged"):
        print(f"diverged ({m['diverged']}): {m['divergence_advice']}")
    if run.status == "completed":
        print(f"saved: {where}" if where.is_file() else "not saved")
    return 0 if run.status == "completed" else 130


# --- the parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftlab", description="ftlab: the fine-tuning workbook from a terminal.")
    parser.add_argument("--version", action="version", version=f"ftlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="before a workshop: build the models and train every chapter's runs",
                       description="Convert SmolLM2-135M, build the pretrained tiny base, and execute each chapter "
                                   "notebook headless (papermill) so every run it makes lands in the run cache "
                                   "(FTLAB_RUNS, else ~/.cache/ftlab/runs). Interrupted, it resumes: chapters done "
                                   "for this profile are skipped.")
    p.add_argument("--profile", choices=PROFILES, help="workload size (default: FTLAB_PROFILE, else gpu with CUDA, else cpu)")
    p.add_argument("--chapters", nargs="+", metavar="NN", help="only these chapters, e.g. 01 02 (default: all)")
    p.add_argument("--restart", action="store_true", help="execute every chosen chapter again, even if done before")
    p.add_argument("--notebooks", help=argparse.SUPPRESS)  # tests: a folder of small chapters
    p.add_argument("--models", nargs="*", help=argparse.SUPPRESS)  # tests: which models to build first
    p.set_defaults(func=cmd_prepare)

    runs = sub.add_parser("runs", help="the run cache: list, show, remove, export",
                          description="Saved runs (FTLAB_RUNS, else ~/.cache/ftlab/runs). ID is a config hash or a "
                                      "unique prefix of one, as `ftlab runs list` shows it.")
    rsub = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    r = rsub.add_parser("list", help="every saved run: hash, label, model, status, steps, final eval loss",
                        description="Every saved run: hash, label, model, status, steps, final eval loss.")
    r.set_defaults(func=cmd_runs_list)
    r = rsub.add_parser("show", help="one run: metrics, eval losses, memory, config", description="One run in full.")
    r.add_argument("id", metavar="ID")
    r.set_defaults(func=cmd_runs_show)
    r = rsub.add_parser("remove", help="delete one run from the cache", description="Delete one saved run.")
    r.add_argument("id", metavar="ID")
    r.set_defaults(func=cmd_runs_remove)
    r = rsub.add_parser("export", help="one run's history as CSV, JSON or TensorBoard events",
                        description="Write one run's per-step history: CSV (one row per step), JSON (the saved run) "
                                    "or TensorBoard event files (train/loss, train/learning_rate, train/grad_norm, "
                                    "eval/loss).")
    r.add_argument("id", metavar="ID")
    r.add_argument("--format", choices=("csv", "json", "tensorboard"), default="csv")
    r.add_argument("--out", help="file (csv, json; '-' for stdout) or folder (tensorboard); default: <hash>.csv, "
                                 "<hash>.json, tensorboard/<hash>")
    r.set_defaults(func=cmd_runs_export)

    e = sub.add_parser("estimate", help="predict the memory of one training step",
                       description="Predict weights, gradients, optimizer state and activations of one training step "
                                   "before loading anything (ftlab.memory.estimate).")
    e.add_argument("--model", default="smollm2-135m",
                   help=f"a size ({', '.join(MODEL_SIZES)}), a preset ({', '.join(PRESETS)}), a local folder or a cached "
                        f"hub id (default: smollm2-135m)")
    e.add_argument("--method", choices=("full", "lora", "qlora"), default="lora")
    e.add_argument("--batch", type=int, default=4, help="sequences per step (default 4)")
    e.add_argument("--seq", type=int, default=128, help="tokens per sequence (default 128)")
    e.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    e.add_argument("--optim", choices=OPTIMIZERS, default="adamw_torch")
    e.add_argument("--bf16", action="store_true", help="bf16 autocast")
    e.add_argument("--lora-r", type=int, default=8, help="LoRA rank for lora/qlora (default 8)")
    e.set_defaults(func=cmd_estimate)

    f = sub.add_parser("fits", help="which model size fits which GPU, full vs LoRA vs QLoRA",
                       description="The what-fits table (ftlab.memory.fits_table) for published architectures.")
    f.add_argument("--batch", type=int, default=1)
    f.add_argument("--seq", type=int, default=2048)
    f.add_argument("--gpus", type=int, nargs="+", default=[16, 24, 48, 80], metavar="GIB")
    f.add_argument("--models", nargs="+", choices=list(MODEL_SIZES), default=list(MODEL_SIZES), metavar="SIZE")
    f.add_argument("--no-checkpointing", action="store_true")
    f.set_defaults(func=cmd_fits)

    t = sub.add_parser("train", help="one run from a config file, printing its final metrics",
                       description="Train one run from a JSON config (RunConfig.to_json(), or a saved run's file); "
                                   "a config trained before is read from the run cache.")
    t.add_argument("config", metavar="CONFIG.json")
    t.add_argument("--retrain", action="store_true", help="train even if the run cache has this config")
    t.add_argument("--label", help="a name for the run")
    t.add_argument("--runs", help="run cache folder (default: FTLAB_RUNS, else ~/.cache/ftlab/runs)")
    t.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FtlabError as err:
        print(f"ftlab {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
