"""The Ray side of :func:`ftlab.experiments.search.tune_search` (imports Ray: only loaded when Ray is there).

* ``trainable``: what each Ray worker runs for one trial, an ``ftlab.train`` run that
  reports its evaluations to Tune (a run from the cache reports its stored ones);
* ``StudyRecorder``: a Tune callback in the driver that writes each finished Ray trial
  into the Optuna study, COMPLETE or PRUNED (stopped by ASHA before its last step);
* ``run_tuner``: the ``Tuner`` with ``OptunaSearch`` (warm-started from the study's trials)
  and ``ASHAScheduler``.
"""
from __future__ import annotations

import math
import os
import tempfile
from typing import Any

import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ftlab.config.run_config import RunConfig
from ftlab.runs.cache import RunCache
from ftlab.training.train import train
from ftlab.experiments.search.plan import Plan
from ftlab.experiments.search.results import finished_trials
from ftlab.experiments.search.space import describe
from ftlab.experiments.search.trials import eval_points

METRIC = "eval_loss"
"""What every trial reports and ASHA compares (lower is better)."""


def report(step: int, loss: float, config: RunConfig, run_key: str, from_cache: bool) -> None:
    """One evaluation to Tune (ASHA judges it; the driver's StudyRecorder files it)."""
    tune.report({METRIC: loss, "step": step, "config_hash": config.hash(), "run_key": run_key,
                 "from_cache": from_cache})


class ReportToTune(TrainerCallback):
    """Reports each evaluation between step 0 and the last step to Tune while training.

    The last one is reported by ``trainable`` once ``train`` has returned: ASHA stops a
    trial when it reaches ``max_t``, and Ray then ends the worker's training at once, so
    reporting the last step from inside training would end the run before it is saved
    to the cache.
    """

    def __init__(self, config: RunConfig, run_key: str) -> None:
        self.config = config
        self.run_key = run_key
        self.reported: set[int] = set()

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, float] | None = None, **kw: Any) -> None:
        step = state.global_step
        if 0 < step < self.config.max_steps and metrics and METRIC in metrics:
            self.reported.add(step)
            report(step, float(metrics[METRIC]), self.config, self.run_key, False)


def trainable(params: dict[str, Any], *, base: dict[str, Any], runs_dir: str, env: dict[str, str]) -> None:
    """One Ray trial: train ``base`` with ``params``, then report what is left to report (the
    last evaluation; every evaluation of a run read from the cache). ``env`` carries the
    driver's ftlab and Hugging Face settings (cache folders, offline mode, profile) to a
    worker that may run on another machine; ``runs_dir`` is the driver's runs folder."""
    os.environ.update(env)
    config = RunConfig.from_dict(base).replace(**params)
    live = ReportToTune(config, RunCache.key_for(config)[0])
    run = train(config, callbacks=[live], runs_dir=runs_dir, progress=False)
    for step, loss in eval_points(run):
        if step not in live.reported:
            report(step, loss, config, live.run_key, run.from_cache)


class StudyRecorder(tune.Callback):
    """Adds every finished Ray trial to the Optuna study, with the attributes a local
    search's trials carry (contributor, config hash, steps run, pruned step)."""

    def __init__(self, plan: Plan, progress: bool) -> None:
        self.plan = plan
        self.progress = progress
        self.points: dict[str, dict[int, float]] = {}
        """Ray trial id -> {step: eval loss} reported so far."""

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        if METRIC in result:
            self.points.setdefault(trial.trial_id, {})[int(result["step"])] = float(result[METRIC])

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._record(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._record(trial, error=True)

    def _record(self, trial: Any, error: bool) -> None:
        plan, last = self.plan, trial.last_result or {}
        points = self.points.get(trial.trial_id, {})
        max_steps = plan.base.max_steps
        reached = max(points, default=0)
        value = points.get(reached)
        attrs: dict[str, Any] = {"contributor": plan.contributor, "config_hash": last.get("config_hash"),
                                 "run_key": last.get("run_key"), "max_steps": max_steps, "steps_run": reached, "from_cache": last.get("from_cache"),
                                 "runner": "ray"}
        if error or value is None:
            state, value = TrialState.FAIL, None
        elif not math.isfinite(value):
            state, value, attrs["diverged"] = TrialState.FAIL, None, "non-finite"
        elif reached < max_steps:  # a pruned trial has no final value, as in a local search
            state, value, attrs["pruned_step"] = TrialState.PRUNED, None, reached
        else:
            state = TrialState.COMPLETE
        frozen = optuna.trial.create_trial(params=dict(trial.config), distributions=plan.space, value=value,
                                           state=state, intermediate_values=points, user_attrs=attrs)
        plan.study.add_trial(frozen)
        if self.progress:
            outcome = (f"eval loss {value:.4f}" if state == TrialState.COMPLETE else
                       f"stopped by ASHA at step {reached}" if state == TrialState.PRUNED else "failed")
            print(f"  ray trial {describe(dict(trial.config))}: {outcome}", flush=True)


def searcher(plan: Plan) -> OptunaSearch:
    """Ray's OptunaSearch with the study's sampler, told every finished trial already in
    the study, so a second call goes on from what the first one learnt."""
    search = OptunaSearch(space=dict(plan.space), metric=METRIC, mode="min", sampler=plan.study.sampler)
    for t in finished_trials(plan.study):
        if set(t.params) != set(plan.space):
            continue  # a trial of another space (a joined study's older trials)
        values = [t.intermediate_values[s] for s in sorted(t.intermediate_values)]
        search.add_evaluated_point(t.params, t.value if t.value is not None else (values[-1] if values else math.nan),
                                   error=t.state == TrialState.FAIL, pruned=t.state == TrialState.PRUNED,
                                   intermediate_values=values or None)
    return search


def run_tuner(plan: Plan, todo: int, workers: int | None, progress: bool) -> None:
    """Run ``todo`` trials on Ray, ``workers`` at a time. A Ray already running (a cluster the
    caller joined) is used and left running; otherwise a local one is started for these trials
    and shut down after them, so a notebook kernel does not keep Ray's processes afterwards."""
    started = not ray.is_initialized()
    if started:
        start_local_ray(workers)
    try:
        _fit(plan, todo, workers, progress)
    finally:
        if started:
            ray.shutdown()


RAY_START_ATTEMPTS = 3
"""Ray gives a new local node a fixed 30 s to register its raylet, and on a loaded 2-core machine
(nbval running another chapter's processes beside this one) it can miss that: the node is then
stopped and started again, up to this many times in all."""


def start_local_ray(workers: int | None) -> None:
    """A local Ray for this process's trials, started again if its node times out at startup."""
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            return
        except Exception as err:  # Ray raises a bare Exception for this case
            if "timed out during startup" not in str(err) or attempt == RAY_START_ATTEMPTS:
                raise
            ray.shutdown()


def _fit(plan: Plan, todo: int, workers: int | None, progress: bool) -> None:
    """The trials on a running Ray: one CPU each, ASHA judging them by their eval loss per step."""
    workers = workers or max(int(ray.cluster_resources().get("CPU", 1)), 1)
    base = plan.base
    env = {k: v for k, v in os.environ.items() if k.startswith(("FTLAB_", "HF_"))}
    folder = str(RunCache(plan.runs_dir).folder)
    job = tune.with_resources(tune.with_parameters(trainable, base=base.to_dict(), runs_dir=folder, env=env),
                              {"cpu": 1})
    last = max(base.max_steps, 1)  # ASHA's resource is the optimizer step: first judged after one evaluation
    asha = ASHAScheduler(time_attr="step", max_t=last, grace_period=min(base.eval_steps, last), reduction_factor=2)
    recorder = StudyRecorder(plan, progress)
    # Ray's own progress tables off (the recorder prints one line per trial); its result
    # folder is temporary: the study and the run cache keep what matters
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    with tempfile.TemporaryDirectory(prefix="ftlab-ray-") as results:
        # reuse_actors: a worker imports torch and transformers once, not once per trial (a
        # trial ASHA stops ends at once: Ray raises SystemExit in its blocked report call)
        tuner = tune.Tuner(job, tune_config=tune.TuneConfig(metric=METRIC, mode="min", search_alg=searcher(plan),
                                                            scheduler=asha, num_samples=todo,
                                                            max_concurrent_trials=workers, reuse_actors=True),
                           run_config=tune.RunConfig(storage_path=results, callbacks=[recorder], verbose=0))
        tuner.fit()
