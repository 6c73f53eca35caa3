"""A classroom on one JupyterHub: six kernels share one runs folder and one journal-file study.

Started together, as learners' kernels would be, each its own Python process:

* two learners ``train()`` tiny runs; both train the same configs, so two writers race on
  one run key;
* two learners ``search()`` one shared journal-file study (same name, their own contributor
  names), drawing configs the trainers train too;
* one learner's kernel is killed (SIGKILL) in the middle of a longer run;
* a teacher's newer ftlab keeps writing run files of a later schema (one of them with a
  config field this ftlab lacks) into the same folder, one of them under the key of a config
  the learners train: the run a teacher prepared for the chapter.

What it guards: whatever the timing, nothing in the folder is lost, damaged or moved. Every
finished run is there and readable, the killed run is simply absent (no half file, no
``*.tmp``), the study holds each finished trial once, and the newer ftlab's files are left
byte for byte as it wrote them: skipped with one line by this ftlab's readers (the learners'
cache look-ups and ``ftlab runs list``), never renamed ``*.corrupt-*``, quarantined or
replaced (a learner who cannot read the teacher's run trains its config again, and must not
save over it). Before the RunCache an older reader that met a newer file under the key it
looked up renamed it ``.corrupt-*`` as damaged, and ``runs list`` called it "unreadable":
this test fails there (the newer ftlab's writer finds its file gone, a ``*.corrupt-*`` file
appears, no ``skipped`` line is printed).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

import ftlab
from ftlab import RunConfig
from ftlab.foundation.storage import write_json_atomic
from ftlab.runs.cache import PRUNED, QUARANTINE, RunCache
from ftlab.runs.record import SCHEMA_VERSION, Run
from ftlab.experiments.search.study import counts_toward_budget, open_storage

READY_S = 300
"""Seconds every process gets to import torch and reach the starting line (a busy 2-core box)."""
RUN_S = 300
"""Seconds after the start for every process to finish: a hang fails here, showing its output."""
STUDY = "class"
SEARCH_TRIALS = {"search-ana": 3, "search-ben": 3}
SEARCH_RATES = [1e-3, 2e-3, 3e-3]
"""The shared study's space: learning rates the trainers train too, so trials meet their runs."""
PROGRESS_BAR = re.compile(r"\d+%\|.*\|")

BARRIER = """
import json, sys, time
from pathlib import Path
shared, me, spec = Path(sys.argv[1]), sys.argv[2], json.loads(Path(sys.argv[3]).read_text())

def start_together() -> None:
    (shared / f"ready.{me}").touch()
    while not (shared / "go").exists():
        time.sleep(0.01)
"""

HEAVY = BARRIER + """
import torch
torch.set_num_threads(1)
from ftlab import RunConfig, train
"""

TRAINER = HEAVY + """
start_together()
for job in spec["jobs"]:
    run = train(RunConfig.from_dict(job["config"]), label=job["label"], progress=False)
    print("RESULT " + json.dumps({"label": run.label, "key": run.key, "status": run.status,
                                  "from_cache": run.from_cache}), flush=True)
"""

SEARCHER = HEAVY + """
from optuna.distributions import CategoricalDistribution
from ftlab.experiments.search import search
start_together()
search(RunConfig.from_dict(spec["base"]), {"learning_rate": CategoricalDistribution(spec["rates"])},
       n_trials=spec["n_trials"], sampler="random", storage=spec["journal"], study_name=spec["study"],
       seed=spec["seed"], contributor=me)
print("SEARCH DONE", flush=True)
"""

KILLED = HEAVY + """
from transformers import TrainerCallback

class PrintSteps(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        print(f"step {state.global_step}", flush=True)

start_together()
train(RunConfig.from_dict(spec["config"]), label="killed", callbacks=[PrintSteps()], progress=True)
print("FINISHED (it should have been killed before this)", flush=True)
"""

NEWER = BARRIER + """
# A newer ftlab, simulated: this ftlab's atomic writer, without this ftlab's package (and its torch)
import types
package = types.ModuleType("ftlab")
package.__path__ = [spec["ftlab_dir"]]
sys.modules["ftlab"] = package
from ftlab.foundation.storage import write_json_atomic

files = {Path(p): data for p, data in spec["files"].items()}
mine = {p: write_json_atomic(shared / "newer-scratch" / p.name, d).read_bytes() for p, d in files.items()}

def check(when: str) -> None:
    for p in files:
        now = p.read_bytes() if p.exists() else None
        if now != mine[p]:
            try:
                d = json.loads(now)
                what = (f"now schema {d.get('schema')}, written by ftlab {d.get('env', {}).get('ftlab')}, "
                        f"label {d.get('label')!r}")
            except Exception:
                what = "gone" if now is None else f"now {now[:80]!r}"
            print(f"CHANGED {p.name} {when}: {what}", flush=True)

for p, d in files.items():  # already in the folder when the class starts
    write_json_atomic(p, d)
writes = 1
start_together()
while not (shared / "stop").exists():
    time.sleep(0.1)
    check("between my writes")
    for p, d in files.items():
        write_json_atomic(p, d)
    writes += 1
check("after my last write, once every other process had ended")
print(f"WROTE {writes} times", flush=True)
"""


class Proc:
    """One learner's process, its output collected as it comes (a full pipe would block it)."""

    def __init__(self, name: str, script: str, shared: Path, spec: dict[str, Any], env: dict[str, str]) -> None:
        self.name = name
        (shared / f"{name}.py").write_text(textwrap.dedent(script))
        (shared / f"{name}.json").write_text(json.dumps(spec))
        self.popen = subprocess.Popen([sys.executable, str(shared / f"{name}.py"), str(shared), name,
                                       str(shared / f"{name}.json")], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        """What it printed, without the libraries' progress bars."""
        said = [line for line in self.lines if line.strip() and not PROGRESS_BAR.search(line)]
        return f"--- {self.name} (pid {self.popen.pid}, exit {self.popen.returncode}) printed:\n" + "\n".join(said)

    def wait(self, deadline: float) -> int:
        """The exit status; a process still running at ``deadline`` is killed and the test fails."""
        try:
            code = self.popen.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            self.reader.join(5)
            raise AssertionError(f"{self.name} did not finish in time (hung?)\n{self.output()}") from None
        self.reader.join(5)
        return code

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(line[len("RESULT "):]) for line in self.lines if line.startswith("RESULT ")]


def newer_run(config: dict[str, Any], key: str) -> dict[str, Any]:
    """A run file as a later ftlab writes it: a schema this ftlab does not know."""
    return {"schema": SCHEMA_VERSION + 1, "key": key, "config": config, "config_hash": "0" * 12,
            "history": [{"step": 1, "loss": 4.0}], "evals": [{"step": 0, "eval_loss": 5.0}],
            "metrics": {"final_eval_loss": 5.0, "carbon_grams": 0.1}, "memory": None, "samples": [],
            "status": "completed", "env": {"ftlab": "9.9"}, "label": "teacher's run"}


def test_a_classroom_sharing_one_runs_folder_and_one_study_loses_and_damages_nothing(tiny_config, tmp_path):
    runs, shared = tmp_path / "runs", tmp_path / "shared"
    runs.mkdir()
    shared.mkdir()
    cache = RunCache(runs)
    journal = shared / "class.journal"
    base = tiny_config.replace(max_steps=3, eval_steps=3, eval_size=8, exact_match_size=0)

    def job(label: str, **changes: Any) -> dict[str, Any]:
        return {"label": label, "config": base.replace(**changes).to_dict()}

    # both trainers start with the same two configs: two writers on one key, at the same moment
    jobs = {"train-ana": [job("lr 1e-3", learning_rate=1e-3), job("lr 2e-3", learning_rate=2e-3),
                          job("lr 4e-3, 2 steps", learning_rate=4e-3, max_steps=2, eval_steps=2)],
            "train-ben": [job("lr 1e-3", learning_rate=1e-3), job("lr 2e-3", learning_rate=2e-3),
                          job("lr 5e-3, 4 steps", learning_rate=5e-3, max_steps=4, eval_steps=2)]}
    killed_config = base.replace(learning_rate=7e-3, max_steps=5000, eval_steps=5000)  # minutes: killed long before
    killed_key = cache.key_for(killed_config)[0]

    # the teacher's newer files: one under the key of a config both trainers (and the search) train
    taught = base.replace(learning_rate=2e-3)
    taught_key = cache.key_for(taught)[0]
    extra = {**base.replace(learning_rate=6e-3).to_dict(), "gradient_noise": 0.1}  # a field this ftlab lacks
    extra_key = hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:16]
    newer = {cache.path(taught_key): newer_run(taught.to_dict(), taught_key),
             cache.path(extra_key): newer_run(extra, extra_key)}
    written = {p: write_json_atomic(shared / "expected" / p.name, d).read_bytes() for p, d in newer.items()}

    (tmp_path / "tmp").mkdir()  # the killed run's Trainer folder is left behind: here, not in /tmp
    env = {**os.environ, "FTLAB_RUNS": str(runs), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "TMPDIR": str(tmp_path / "tmp")}
    procs: dict[str, Proc] = {}
    try:
        procs["newer-ftlab"] = Proc("newer-ftlab", NEWER, shared, {
            "ftlab_dir": str(Path(ftlab.__file__).parent), "files": {str(p): d for p, d in newer.items()}}, env)
        for name, todo in jobs.items():
            procs[name] = Proc(name, TRAINER, shared, {"jobs": todo}, env)
        for seed, (name, n) in enumerate(SEARCH_TRIALS.items()):
            procs[name] = Proc(name, SEARCHER, shared, {
                "base": base.to_dict(), "rates": SEARCH_RATES, "n_trials": n, "journal": str(journal),
                "study": STUDY, "seed": seed}, env)
        procs["killed"] = Proc("killed", KILLED, shared, {"config": killed_config.to_dict()}, env)

        deadline = time.monotonic() + READY_S
        while not all((shared / f"ready.{name}").exists() for name in procs):
            ended = [p for p in procs.values() if p.popen.poll() is not None]
            assert not ended, "a process ended before the class started:\n" + "\n".join(p.output() for p in ended)
            assert time.monotonic() < deadline, "not every process reached the start in time:\n" + "\n".join(
                p.output() for p in procs.values() if not (shared / f"ready.{p.name}").exists())
            time.sleep(0.05)
        (shared / "go").touch()
        started = time.monotonic()
        deadline = started + RUN_S

        # the SIGKILL lands once the long run's history is underway: mid-run
        killed = procs["killed"]
        while not (any(": training 5000 steps" in line for line in killed.lines)
                   and any(line.startswith("step 2") for line in killed.lines)):
            assert killed.popen.poll() is None, f"the long run ended before it could be killed\n{killed.output()}"
            assert time.monotonic() < deadline, f"the long run never got underway\n{killed.output()}"
            time.sleep(0.02)
        os.kill(killed.popen.pid, signal.SIGKILL)
        assert killed.wait(deadline) == -signal.SIGKILL, killed.output()

        for name in [*jobs, *SEARCH_TRIALS]:
            assert procs[name].wait(deadline) == 0, f"{name} failed\n{procs[name].output()}"
        (shared / "stop").touch()
        writer = procs["newer-ftlab"]
        assert writer.wait(time.monotonic() + 30) == 0, f"the newer ftlab's writer failed\n{writer.output()}"
        class_seconds = time.monotonic() - started
    finally:
        for p in procs.values():
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait()
    everyone = "\n".join(p.output() for p in procs.values())

    # the newer ftlab's files: there, byte for byte, at every moment its writer looked
    changed = [line for line in writer.lines if line.startswith("CHANGED")]
    said = [f"{p.name}: {line}" for p in procs.values() for line in p.lines if "run cache:" in line]
    assert not changed, ("a newer ftlab's run file was replaced or removed while the class ran:\n" + "\n".join(changed)
                         + "\nwhat the learners' run caches said meanwhile:\n" + "\n".join(said)
                         + f"\n{everyone}")
    rewrites = int(next((line.split()[1] for line in writer.lines if line.startswith("WROTE")), 0))
    assert rewrites >= 3, f"the newer ftlab wrote only {rewrites} times in {class_seconds:.1f} s\n{writer.output()}"
    for path, data in written.items():
        now = path.read_bytes() if path.is_file() else b"(gone)"
        assert now == data, f"{path.name} is not as the newer ftlab wrote it: {now[:300]!r}\n{everyone}"

    # nothing damaged, moved aside or half-written
    assert not (runs / QUARANTINE).exists(), f"quarantined: {sorted((runs / QUARANTINE).iterdir())}\n{everyone}"
    for folder in (runs, shared):
        assert not list(folder.rglob("*.corrupt-*")), f"moved aside: {list(folder.rglob('*.corrupt-*'))}\n{everyone}"
        assert not list(folder.rglob("*.tmp")), f"half-written files left: {list(folder.rglob('*.tmp'))}"

    # every run the trainers finished is there and readable; the killed run is simply absent
    made_by: dict[str, str] = {}  # run key -> the process that finished it, for the messages
    for name, todo in jobs.items():
        results = procs[name].results()
        assert [r["label"] for r in results] == [j["label"] for j in todo], procs[name].output()
        for r, j in zip(results, todo):
            expected_key = cache.key_for(RunConfig.from_dict(j["config"]))[0]
            assert r["status"] == "completed" and r["key"] == expected_key, f"{name}: {r}\n{procs[name].output()}"
            made_by.setdefault(r["key"], f"{name} ({r['label']})")
    assert not cache.path(killed_key).exists() and not cache.path(killed_key, pruned=True).exists(), \
        f"the killed run {killed_key} was saved\n{killed.output()}"

    # the study, reopened fresh: each finished trial once, each contributor's share exactly
    study = optuna.load_study(study_name=STUDY, storage=open_storage(journal))
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))), f"trial numbers {numbers}\n{everyone}"
    assert all(t.state.is_finished() for t in trials), [(t.number, t.state) for t in trials]
    finished = Counter(t.user_attrs.get("contributor") for t in trials if counts_toward_budget(t))
    assert finished == Counter(SEARCH_TRIALS), f"finished trials by contributor: {dict(finished)}\n{everyone}"
    searched = {t.user_attrs["run_key"]: f"{t.user_attrs['contributor']} (trial {t.number})"
                for t in trials if t.state == TrialState.COMPLETE}
    missing = [f"{searched[k]}: {k}" for k in searched if not cache.path(k).is_file()]
    assert searched and not missing, f"trials name runs that are not in the folder: {missing}\n{everyone}"
    made_by = {**searched, **made_by}

    finished_runs = set(made_by) - {taught_key}  # the teacher's key holds the teacher's file
    for key in finished_runs:
        try:
            run, loaded = Run.load(cache.path(key)), cache.load_completed(key)
        except Exception as err:
            raise AssertionError(f"the run of {made_by[key]} ({key}) does not load: {err}\n{everyone}") from err
        assert loaded is not None and loaded.status == "completed" and run.key == loaded.key == key, \
            f"the run of {made_by[key]} does not load back as completed: {run!r}, {loaded!r}"
    on_disk = {p.stem for p in runs.glob("*.json")} - {p.stem for p in newer}
    assert on_disk == finished_runs, f"runs on disk {sorted(on_disk)}, finished: {made_by}\n{everyone}"
    assert not (runs / PRUNED).exists() or not list((runs / PRUNED).iterdir())

    # a fresh `ftlab runs list` lists every run and skips each newer file with one line
    try:
        listed = subprocess.run([sys.executable, "-m", "ftlab.cli", "runs", "list"], env=env, capture_output=True,
                                text=True, timeout=180)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"ftlab runs list hung; it printed:\n{err.stdout!r}\n{err.stderr!r}") from None
    shown = f"ftlab runs list (exit {listed.returncode}) printed:\n{listed.stdout}{listed.stderr}"
    assert listed.returncode == 0, shown
    assert f"\n{len(finished_runs)} runs in {cache.folder}" in f"\n{listed.stdout}", shown
    assert all(key in listed.stdout for key in finished_runs), shown
    skipped = [line for line in listed.stdout.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == len(newer), shown
    for path in newer:
        mine = [line for line in skipped if line.startswith(f"skipped {path.name}: ")]
        assert len(mine) == 1 and f"run schema {SCHEMA_VERSION + 1}" in mine[0] and "ftlab 9.9" in mine[0], shown
