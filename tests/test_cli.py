"""The `ftlab` command, each subcommand run as a learner runs it (a subprocess), and the
`lab` and trust logic of make.py (which the Makefile calls), checked without starting a server.

Every subprocess gets its own FTLAB_CACHE / FTLAB_RUNS and HF_HUB_OFFLINE=1: nothing here
touches the user's cache or a network.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.sign import NotebookNotary
import pytest

from ftlab import Run, RunConfig
from ftlab.cli.main import main
from ftlab.cli.runs import history_rows
from ftlab.runs.cache import RunCache

REPO = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "ftlab"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli")
    return {**os.environ, "FTLAB_CACHE": str(root / "cache"), "FTLAB_RUNS": str(root / "runs"),
            "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def ftlab(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftlab.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(env, addition_jsonl, tmp_path_factory) -> tuple[RunConfig, subprocess.CompletedProcess]:
    """`ftlab train CONFIG.json` on a two-step tiny run: the run every `runs` test reads."""
    config = RunConfig(model="tiny", dataset=str(addition_jsonl), system_prompt="", lora_r=0, learning_rate=3e-3,
                       max_steps=2, per_device_train_batch_size=8, max_seq_length=64, eval_steps=1, eval_size=8,
                       exact_match_size=2, max_new_tokens=4)
    path = tmp_path_factory.mktemp("config") / "config.json"
    path.write_text(config.to_json())
    return config, ftlab("train", str(path), "--label", "cli run", env=env)


def saved_key(env: dict[str, str]) -> str:
    """The cache key of the one run `trained` saved (its file name in the runs folder)."""
    (path,) = [p for p in Path(env["FTLAB_RUNS"]).glob("*.json") if p.stem != "0123456789ab"]
    return path.stem


# --- help and the console script -----------------------------------------------------------------


def test_console_script_is_installed_and_answers_help(env):
    assert CONSOLE_SCRIPT.is_file(), "pip install -e . makes the `ftlab` console script"
    done = subprocess.run([str(CONSOLE_SCRIPT), "--help"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for command in ("prepare", "runs", "estimate", "fits", "train"):
        assert command in done.stdout


@pytest.mark.parametrize("argv", [["prepare"], ["runs"], ["runs", "list"], ["runs", "show"], ["runs", "remove"],
                                  ["runs", "export"], ["estimate"], ["fits"], ["train"]])
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ftlab " + " ".join(argv))
    if argv == ["prepare"]:
        assert "--profile" in out and "--chapters" in out
        assert "--notebooks" not in out and "--models" not in out  # the options for tests are hidden


# --- train and runs ----------------------------------------------------------------------------


def test_train_prints_the_final_metrics_and_saves_the_run(trained, env):
    config, done = trained
    assert done.returncode == 0, done.stderr
    key = saved_key(env)
    assert f"run {key} (cli run): completed, 2 steps · train loss" in done.stdout
    assert "eval loss" in done.stdout and "exact match" in done.stdout
    saved = Path(env["FTLAB_RUNS"]) / f"{key}.json"
    assert f"saved: {saved}" in done.stdout and Run.load(saved).label == "cli run"


def test_train_refuses_malformed_config_with_line_and_column(env, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "tiny",\n "max_steps": 4,}')
    done = ftlab("train", str(bad), env=env)
    assert done.returncode == 1
    assert "bad.json: not valid JSON at line 2, column 17" in done.stderr and "Traceback" not in done.stderr


def test_runs_list(trained, env):
    config, _ = trained
    key = saved_key(env)
    done = ftlab("runs", "list", env=env)
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()[:2]
    assert header.split() == ["run", "label", "model", "status", "steps", "final", "eval", "loss"]
    assert row.split()[:6] == [key, "cli", "run", "tiny", "completed", "2"]
    assert f"1 runs in {env['FTLAB_RUNS']}" in done.stdout


def test_runs_show_by_hash_prefix(trained, env):
    config, _ = trained
    key = saved_key(env)
    done = ftlab("runs", "show", key[:6], env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"run {key} (cli run): completed, 2 steps")
    assert "final_eval_loss" in done.stdout and "eval loss by step: 0: " in done.stdout
    shown = done.stdout.split("config (ftlab train reads it back):\n", 1)[1]
    assert RunConfig.from_json(shown) == config


def test_runs_export_csv_json_and_tensorboard(trained, env, tmp_path):
    config, _ = trained
    key = saved_key(env)
    done = ftlab("runs", "export", key, "--format", "csv", "--out", "-", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "step,loss,learning_rate,grad_norm,weight_norm,tokens,tokens_per_second,step_time,eval_loss"
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2"]
    assert lines[1].split(",")[1] == "" and lines[1].split(",")[-1] != ""  # step 0: eval loss only

    # the other formats in-process: the same code, without a second interpreter start
    run = Run.load(Path(env["FTLAB_RUNS"]) / f"{key}.json")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTLAB_RUNS", env["FTLAB_RUNS"])
        assert main(["runs", "export", key, "--format", "json", "--out", str(tmp_path / "r.json")]) == 0
        assert main(["runs", "export", key, "--format", "tensorboard", "--out", str(tmp_path / "tb")]) == 0
    assert json.loads((tmp_path / "r.json").read_text()) == run.to_dict()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "eval/loss"} <= tags
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("train/loss")] == \
        [(r["step"], pytest.approx(r["loss"])) for r in run.history]
    assert [e.step for e in events.Scalars("eval/loss")] == [e["step"] for e in run.evals]


def test_runs_remove(trained, env):
    config, _ = trained
    key = saved_key(env)
    folder = Path(env["FTLAB_RUNS"])
    copy = folder / "0123456789ab.json"
    shutil.copy(folder / f"{key}.json", copy)
    done = ftlab("runs", "remove", "0123456789ab", env=env)
    assert done.returncode == 0, done.stderr
    assert f"removed {copy}" in done.stdout and not copy.exists() and (folder / f"{key}.json").exists()
    missing = ftlab("runs", "remove", "0123456789ab", env=env)
    assert missing.returncode == 1 and "no run '0123456789ab'" in missing.stderr


def test_history_rows_put_eval_loss_beside_its_step():
    run = Run(config=RunConfig(model="tiny"), history=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}],
              evals=[{"step": 0, "eval_loss": 3.0}, {"step": 2, "eval_loss": 1.4}])
    assert history_rows(run) == [{"step": 0, "eval_loss": 3.0}, {"step": 1, "loss": 2.0},
                                 {"step": 2, "loss": 1.5, "eval_loss": 1.4}]


# --- estimate and fits -------------------------------------------------------------------------


def test_estimate_from_a_size_label(env):
    done = ftlab("estimate", "--model", "7B", "--method", "qlora", "--batch", "1", "--seq", "2048",
                 "--checkpointing", "--weights", "float32", "--bf16", "--optim", "adamw_8bit", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("one training step of 7B (Qwen2.5-7B")
    assert "QLoRA" in done.stdout
    assert "batch 1 x 2048 tokens, adamw_8bit, fp32 weights, bf16 autocast, gradient checkpointing" in done.stdout
    for key in ("weights", "gradients", "optimizer", "activations", "total"):
        assert any(line.split()[0] == key for line in done.stdout.splitlines()[1:6]), key


def test_estimate_matches_the_library_and_refuses_bad_values(capsys, monkeypatch, tmp_path):
    from ftlab.memory import estimate, model_architecture
    monkeypatch.setenv("FTLAB_CACHE", str(tmp_path))
    from ftlab.memory.fits import gpu_setup
    from ftlab.memory.predict import breakdown
    config = RunConfig(model="tiny", lora_r=0, per_device_train_batch_size=8, max_seq_length=64)
    assert main(["estimate", "--model", "tiny", "--method", "full", "--batch", "8", "--seq", "64", "--weights",
                 "float32"]) == 0
    expected = estimate(config)  # ftlab's own step, exact on a CPU
    # the line itself, not its index: a library imported by the first estimate may log a line first
    totals = lambda out: [line.split() for line in out.splitlines() if line.split()[:1] == ["total"]]
    assert totals(capsys.readouterr().out) == [f"total {expected.total / 2**20:.1f} MiB".split()]
    assert main(["estimate", "--model", "tiny", "--method", "full", "--batch", "8", "--seq", "64"]) == 0
    out = capsys.readouterr().out
    bf16 = breakdown(model_architecture("tiny"), gpu_setup(config), 8, 64)  # the default: a bf16 base on a GPU
    assert totals(out) == [f"total {bf16.total / 2**20:.1f} MiB".split()] and bf16.total < expected.total
    assert "assumed: a bf16 base" in out
    assert main(["estimate", "--model", "tiny", "--bf16"]) == 1
    assert "--weights float32" in capsys.readouterr().err
    assert main(["estimate", "--model", "tiny", "--seq", "4"]) == 1
    assert "RunConfig.max_seq_length=4" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["estimate", "--model", "nobody/no-such-model"]) == 1
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err


def test_fits_table(env):
    done = ftlab("fits", "--models", "0.5B", "70B", "--gpus", "24", "80", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split() == ["model", "source", "method", "total", "GiB", "24", "GiB", "80", "GiB"]
    rows = {(line.split()[0], line.split()[2]): line.split()[-2:] for line in lines[2:8]}
    assert rows[("0.5B", "qlora")] == ["yes", "yes"] and rows[("70B", "full")] == ["-", "-"]
    assert rows[("70B", "qlora")] == ["-", "yes"]
    assert lines[-1].startswith("assumed: a bf16 base, loaded with torch_dtype=bfloat16")
    fp32 = ftlab("fits", "--models", "8B", "--gpus", "24", "--weights", "float32", env=env)
    by_method = {line.split()[2]: line.split()[-1] for line in fp32.stdout.splitlines()[2:5]}
    assert by_method == {"full": "-", "lora": "-", "qlora": "yes"} and "assumed: an fp32 base" in fp32.stdout


def test_fits_says_a_7b_lora_fits_a_24_gib_card(env):
    """Issue 38: by default the answer is for a bf16 base (how TRL, axolotl and Unsloth load it),
    and it says so; the fp32 base of ftlab's own runs is one flag away and does not fit."""
    done = ftlab("fits", "--models", "7B", "--gpus", "24", "--batch", "1", "--seq", "2048", env=env)
    assert done.returncode == 0, done.stderr
    assert "with gradient checkpointing" in done.stdout.splitlines()[0]
    rows = {line.split()[2]: line.split() for line in done.stdout.splitlines()[2:5]}
    assert rows["lora"][-1] == "yes" and float(rows["lora"][3]) < 0.9 * 24
    assumed = done.stdout.splitlines()[-1]
    assert "bf16 base" in assumed and "fp32 adapters and fp32 optimizer state" in assumed and "bf16 compute" in assumed
    assert "--weights float32" in assumed


# --- prepare -------------------------------------------------------------------------------------


def _chapter(path: Path, *code: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("PROFILE = None", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in code]
    nbformat.write(nb, path)


def test_prepare_runs_each_chapter_records_it_and_resumes(env, addition_jsonl, tmp_path):
    env = {**env, "FTLAB_CACHE": str(tmp_path / "cache"), "FTLAB_RUNS": str(tmp_path / "runs")}
    chapters = tmp_path / "notebooks"
    chapters.mkdir()
    config = RunConfig(model="tiny", dataset=str(addition_jsonl), system_prompt="", lora_r=0, max_steps=1,
                       per_device_train_batch_size=4, max_seq_length=64, eval_steps=1, eval_size=4, exact_match_size=0)
    _chapter(chapters / "00_trains.ipynb",
             "import os\nassert PROFILE == 'ci' and os.environ['FTLAB_PROFILE'] == 'ci', (PROFILE, os.environ.get('FTLAB_PROFILE'))",
             f"import ftlab\nftlab.train(ftlab.RunConfig.from_json({config.to_json()!r}))")
    _chapter(chapters / "01_breaks.ipynb", "raise RuntimeError('chapter one is broken')")
    _chapter(chapters / "02_other.ipynb", "print('never asked for')")

    first = ftlab("prepare", "--profile", "ci", "--chapters", "0", "01", "--notebooks", str(chapters), "--models",
                  env=env)
    assert first.returncode == 1
    assert "[1/2] 00_trains: done in" in first.stdout and "1 new runs" in first.stdout
    assert "[2/2] 01_breaks: failed in cell" in first.stderr and "RuntimeError: chapter one is broken" in first.stderr
    assert "02_other" not in first.stdout
    state = json.loads((tmp_path / "runs" / "prepare" / "state.json").read_text())
    assert set(state["done"]) == {"ci/00_trains.ipynb"} and state["done"]["ci/00_trains.ipynb"]["runs"] == 1
    assert [run.config for _, run in RunCache(tmp_path / "runs").listing().runs] == [config]

    _chapter(chapters / "01_breaks.ipynb", "print('fixed')")
    second = ftlab("prepare", "--profile", "ci", "--chapters", "00", "01", "--notebooks", str(chapters), "--models",
                   env=env)
    assert second.returncode == 0, second.stderr
    assert "[1/2] 00_trains: prepared before (1 runs" in second.stdout and "skipped" in second.stdout
    assert "[2/2] 01_breaks: done in" in second.stdout
    table = second.stdout.split("\n\n")[-1].splitlines()
    assert table[0].split() == ["chapter", "runs", "minutes", "prepared"]
    assert table[1].split()[:2] == ["00_trains", "1"] and table[1].split()[-1] == "before"
    assert table[2].split()[:2] == ["01_breaks", "0"] and table[2].split()[-1] == "now"
    assert table[3].split()[:2] == ["total", "1"]

    # the state belongs to the runs folder it filled: a new FTLAB_RUNS is prepared again, not skipped
    moved = {**env, "FTLAB_RUNS": str(tmp_path / "room")}
    third = ftlab("prepare", "--profile", "ci", "--chapters", "00", "--notebooks", str(chapters), "--models", env=moved)
    assert third.returncode == 0, third.stderr
    assert "[1/1] 00_trains: done in" in third.stdout and "1 new runs" in third.stdout
    assert len(RunCache(tmp_path / "room").listing().runs) == 1

    unknown = ftlab("prepare", "--chapters", "07", "--notebooks", str(chapters), "--models", env=env)
    assert unknown.returncode == 1 and "no such chapter; the chapters are 00, 01, 02" in unknown.stderr


# --- make lab ------------------------------------------------------------------------------------


def _as(user: int | None) -> list[str]:
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user is not None else []


def _make(*args: str, env: dict[str, str] | None = None, user: int | None = None) -> str:
    done = subprocess.run([*_as(user), "make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env or os.environ)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _dry_run(command: str, env: dict[str, str], user: int | None = None) -> str:
    """What ``python make.py <command>`` (which ``make <command>`` calls) would run, on this machine as it is."""
    # as make calls it; another user runs the system's python3 (root's may live in root's home, like pyenv's)
    python = "/usr/bin/python3" if user is not None and os.path.exists("/usr/bin/python3") else sys.executable
    done = subprocess.run([*_as(user), python, "make.py", "--dry-run", command], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _no_display() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}


def _lab_line(out: str) -> str:
    return next(line for line in out.splitlines() if "-m jupyter lab" in line)


def test_make_lab_calls_make_py():
    assert _make("-n", "lab").strip() == "python3 make.py lab"


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the root case")
def test_make_lab_as_root_without_display_allows_root_and_opens_no_browser():
    out = _dry_run("lab", _no_display())
    assert "--allow-root" in _lab_line(out) and "--no-browser" in _lab_line(out)
    assert "Running as root" in out and "No display" in out
    lines = out.splitlines()
    trust = lines.index(next(line for line in lines if "-m jupyter trust notebooks/00_setup_and_tour.ipynb" in line))
    assert trust < lines.index(_lab_line(out)), "the notebooks are trusted again before JupyterLab starts"


def test_make_lab_as_a_user_with_a_display_passes_neither_flag():
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("no setpriv to drop root")
    out = _dry_run("lab", {**os.environ, "DISPLAY": ":0"}, user=65534 if os.geteuid() == 0 else None)
    assert "--allow-root" not in _lab_line(out) and "--no-browser" not in _lab_line(out)
    assert "Running as root" not in out


def test_make_trust_signs_the_notebooks(tmp_path):
    folder = tmp_path / "nb"
    folder.mkdir()
    shutil.copy(REPO / "notebooks" / "00_setup_and_tour.ipynb", folder)
    data = tmp_path / "jupyter"  # not the user's signature database
    data.mkdir()
    path = folder / "00_setup_and_tour.ipynb"
    assert not NotebookNotary(data_dir=str(data)).check_signature(nbformat.read(path, as_version=4))
    before = path.read_bytes()
    _make("trust", f"NOTEBOOKS={folder}", env={**os.environ, "JUPYTER_DATA_DIR": str(data)})
    assert NotebookNotary(data_dir=str(data)).check_signature(nbformat.read(path, as_version=4))
    assert (folder / "00_setup_and_tour.ipynb").read_bytes() == before, "trust never edits a notebook"


def test_a_lettered_chapter_is_a_chapter_of_its_own(tmp_path):
    """Chapter 07b (batch, epochs, packing) sits after 07 and is chosen by its own name."""
    from ftlab.cli.prepare import chapter_notebooks
    for name in ("07_optimizers", "07b_batch_epochs_packing", "08_search", "notes"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    assert [p.stem for p in chapter_notebooks(tmp_path, None)] == ["07_optimizers", "07b_batch_epochs_packing", "08_search"]
    assert [p.stem for p in chapter_notebooks(tmp_path, ["07"])] == ["07_optimizers"]
    assert [p.stem for p in chapter_notebooks(tmp_path, ["07b"])] == ["07b_batch_epochs_packing"]
    assert [p.stem for p in chapter_notebooks(tmp_path, ["7"])] == ["07_optimizers"]
