"""A search process killed with SIGKILL in the middle of a trial resumes when called again,
losing only the trial that was running."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna
from optuna.trial import TrialState

from ftlab.experiments.search import search
from ftlab.experiments.search.study import default_storage_url, open_storage

SCRIPT = textwrap.dedent("""
    import sys
    from optuna.distributions import FloatDistribution
    from ftlab import RunConfig
    from ftlab.experiments.search import search
    base = RunConfig.from_json(open(sys.argv[1]).read())
    search(base, {"learning_rate": FloatDistribution(1e-3, 1e-2, log=True)}, n_trials=2, sampler="random")
""")


def test_a_search_killed_mid_trial_resumes_and_loses_only_that_trial(tiny_config, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    monkeypatch.setenv("FTLAB_RUNS", str(runs))
    # long enough per trial (several seconds) that the kill lands inside the second one
    base = tiny_config.replace(max_steps=8, eval_steps=4, eval_size=8, exact_match_size=0)
    (tmp_path / "base.json").write_text(base.to_json())
    (tmp_path / "search.py").write_text(SCRIPT)
    runs.mkdir()
    url = default_storage_url(runs)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "search.py"), str(tmp_path / "base.json")],
                            env={**os.environ, "FTLAB_RUNS": str(runs)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline, storage = time.monotonic() + 240, None
        while time.monotonic() < deadline and proc.poll() is None:
            if storage is None and (runs / "studies.db").exists():
                storage = open_storage(url)  # ftlab's opening: safe while the search creates the tables
            studies = optuna.get_all_study_summaries(storage) if storage else []
            trials = optuna.load_study(study_name=studies[0].study_name, storage=storage).trials if studies else []
            # the second trial is marked with its process only once its objective starts: a kill before
            # that leaves a trial no process claims, which a resumed search rightly leaves alone
            if [t.state for t in trials] == [TrialState.COMPLETE, TrialState.RUNNING] and "pid" in trials[1].user_attrs:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the search ended before it could be killed:\n{proc.stdout.read()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed = optuna.load_study(study_name=studies[0].study_name, storage=url)
    first = killed.trials[0]
    assert [t.state for t in killed.trials] == [TrialState.COMPLETE, TrialState.RUNNING]

    capsys.readouterr()
    study = search(base, {"learning_rate": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)}, n_trials=2,
                   sampler="random")
    assert "1 trial to run, 1 done before; trial 1 was running in a process that is gone: marked FAIL" in \
        capsys.readouterr().out
    assert study.study_name == killed.study_name
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[0].value == first.value and study.trials[0].params == first.params  # kept, not redone
