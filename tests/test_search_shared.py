"""A workshop's shared study: two processes writing one journal-file study at once lose
no trial and count none twice; a learner's search joins it by name; the same works on a
real PostgreSQL server started here (skipped, saying why, where none is installed)."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from ftlab import Run, RunConfig
from ftlab.experiments.search import (SearchError, contribute, contributors, join_class_study, open_class_study, search,
                          study_setup, trial_rows)

SPACE = {"learning_rate": FloatDistribution(1e-3, 1e-2, log=True),
         "weight_decay": FloatDistribution(1e-3, 0.1, log=True)}
PER_PROCESS = 30

LEARNER = textwrap.dedent("""
    import sys
    from ftlab import Run
    from ftlab.experiments.search import contribute, join_class_study, study_setup
    storage, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    study = join_class_study(storage)
    base, space = study_setup(study)
    print("READY", flush=True)
    sys.stdin.readline()  # both learners start writing at the same moment: when the test says "go" to both
    for i in range(n):
        config = base.replace(learning_rate=1e-3 * (1 + 9 * i / n), weight_decay=0.01 if who == "ana" else 0.05)
        run = Run(config=config, evals=[{"step": 0, "eval_loss": 3.0}, {"step": 4, "eval_loss": 2.0 + i / 100}],
                  metrics={"final_eval_loss": 2.0 + i / 100})
        assert contribute(run, study, who)
""")


@pytest.fixture()
def small(tiny_config, tmp_path, monkeypatch) -> RunConfig:
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path / "runs"))
    return tiny_config.replace(max_steps=4, eval_steps=2, eval_size=8, exact_match_size=0)


def finished_run(config: RunConfig, loss: float) -> Run:
    return Run(config=config, evals=[{"step": 0, "eval_loss": 3.0}, {"step": 4, "eval_loss": loss}],
               metrics={"final_eval_loss": loss})


def _until_ready(stream) -> str:
    """A learner's output up to its READY line: a library may log first (bitsandbytes, on CPUs
    with AVX512-BF16, says it skipped the Hub's check of a kernel it then does not use)."""
    seen = ""
    for line in iter(stream.readline, ""):
        seen += line
        if line == "READY\n":
            break
    return seen


def test_two_processes_write_one_journal_study_at_once(small, tmp_path):
    journal = str(tmp_path / "shared" / "class.journal")
    (tmp_path / "shared").mkdir()
    open_class_study(journal, small, SPACE)
    (tmp_path / "learner.py").write_text(LEARNER)
    script = str(tmp_path / "learner.py")
    learners = [subprocess.Popen([sys.executable, script, journal, who, str(PER_PROCESS)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for who in ("ana", "bo")]
    with ThreadPoolExecutor(len(learners)) as pool:  # each learner's first line, waited for with a bound
        ready = [pool.submit(_until_ready, proc.stdout) for proc in learners]
        try:
            said = [line.result(timeout=120) for line in ready]
        except FutureTimeout:
            for proc in learners:
                proc.kill()  # which also ends the reads
            raise AssertionError("the learners did not reach the start within 120 s") from None
    for proc in learners:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc, first in zip(learners, said):
        out, _ = proc.communicate(timeout=180)
        assert first.endswith("READY\n") and proc.returncode == 0, first + out
    study = join_class_study(journal)
    trials = study.trials
    assert len(trials) == 2 * PER_PROCESS
    assert sorted(t.number for t in trials) == list(range(2 * PER_PROCESS))
    keys = Counter((t.user_attrs["contributor"], t.user_attrs["config_hash"]) for t in trials)
    assert len(keys) == 2 * PER_PROCESS and set(keys.values()) == {1}  # none lost, none twice
    assert Counter(t.user_attrs["contributor"] for t in trials) == {"ana": PER_PROCESS, "bo": PER_PROCESS}
    assert all(t.state == TrialState.COMPLETE and t.intermediate_values == {4: t.value} for t in trials)


def test_contributions_and_a_joined_search_on_postgresql(small, postgres_url):
    teacher = open_class_study(postgres_url, small, SPACE)
    assert study_setup(teacher) == (small, SPACE)
    ana = finished_run(small.replace(learning_rate=2e-3, weight_decay=0.01), 2.5)
    assert contribute(ana, teacher, "ana") and not contribute(ana, teacher, "ana")  # a second call adds nothing
    assert contribute(ana, teacher, "bo")  # the same point from someone else is their trial
    # a Playground run past the space's range still goes in; another experiment does not
    assert contribute(finished_run(small.replace(learning_rate=0.05, weight_decay=0.01), 4.0), teacher, "bo")
    with pytest.raises(SearchError, match=r"not the class experiment: it differs in max_steps \(8, the class uses 4\)"):
        contribute(finished_run(small.replace(max_steps=8), 2.0), teacher, "ana")
    interrupted = finished_run(small, 2.0)
    interrupted.status = "interrupted"
    with pytest.raises(SearchError, match="is interrupted: only a finished"):
        contribute(interrupted, teacher, "ana")
    # a learner joins with the URL and the name only: base and space come from the study
    study = search(storage=postgres_url, study_name="class", n_trials=1, sampler="random", contributor="carol")
    rows = trial_rows(study)
    assert len(rows) == 4 and [r["contributor"] for r in rows] == ["ana", "bo", "bo", "carol"]
    assert rows[-1]["state"] == "COMPLETE" and rows[-1]["steps_run"] == 4
    assert contributors(join_class_study(postgres_url)) == ["ana", "bo", "carol"]
    with pytest.raises(SearchError, match="study 'class' exists for another experiment"):
        open_class_study(postgres_url, small.replace(max_steps=8), SPACE)


# --- a real PostgreSQL server for one test ---------------------------------------------------


def _server_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def postgres_url():
    """A throwaway PostgreSQL server on a free loopback port (as the 'postgres' user when
    run as root: the server refuses to run as root), stopped and removed afterwards."""
    bindir = _server_binaries()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl under /usr/lib/postgresql/*/bin or on PATH): "
                    "apt-get install postgresql to run this test")
    pytest.importorskip("psycopg", reason="SQLAlchemy's postgresql:// URLs need psycopg: pip install 'psycopg[binary]'")
    prefix: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="ftlab-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no 'postgres' user to run the server as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port, data = _free_port(), folder / "data"
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "ftlab", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)
        subprocess.run([*pg_ctl, "-l", str(folder / "server.log"), "-w", "-o",
                        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True)
        yield f"postgresql://ftlab@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_room_replays_a_prepared_search_but_runs_its_own_share_of_a_named_one(small, tmp_path):
    """A search named after itself is the same search whoever repeats it: a learner sharing the
    teacher's runs folder finds its budget spent and trains nothing. In a study shared by
    name, each contributor runs their own share."""
    storage = str(tmp_path / "room.journal")
    prepared = search(small, SPACE, n_trials=2, sampler="random", storage=storage, contributor="teacher", progress=False)
    again = search(small, SPACE, n_trials=2, sampler="random", storage=storage, contributor="learner1", progress=False)
    assert again.study_name == prepared.study_name
    assert Counter(t.user_attrs["contributor"] for t in again.trials) == {"teacher": 2}
    search(small, SPACE, n_trials=1, sampler="random", storage=storage, study_name="class", contributor="teacher",
           progress=False)
    shared = search(small, SPACE, n_trials=1, sampler="random", storage=storage, study_name="class",
                    contributor="learner1", progress=False)
    assert Counter(t.user_attrs["contributor"] for t in shared.trials) == {"teacher": 1, "learner1": 1}
