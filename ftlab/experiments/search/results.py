"""A study read back as plain values: one row per trial, best-so-far, steps pruning saved.

Every figure and table of a search (the chapter's, the widgets') reads the study through
these functions, so they agree; rows are plain dicts, ready for ``pandas.DataFrame(rows)``.
"""
from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ftlab.experiments.search.study import counts_toward_budget


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """One trial: number, state ('COMPLETE', 'PRUNED', 'FAIL', 'RUNNING'), value (final
    eval loss, None unless complete), steps run, the step it was pruned at (None if not),
    who ran it, whether its run came from the cache, then its parameters by field name."""
    attrs = trial.user_attrs
    return {"number": trial.number, "state": trial.state.name, "value": trial.value,
            "steps_run": attrs.get("steps_run"), "pruned_step": attrs.get("pruned_step"),
            "contributor": attrs.get("contributor"), "from_cache": attrs.get("from_cache"),
            "diverged": attrs.get("diverged"), **trial.params}


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """``trial_row`` of every trial, in trial-number order."""
    return [trial_row(t) for t in study.get_trials(deepcopy=False)]


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that are results (completed, pruned, diverged), in trial-number order."""
    return [t for t in study.get_trials(deepcopy=False) if counts_toward_budget(t)]


def best_so_far(study: optuna.Study) -> list[float]:
    """The lowest final eval loss after each finished trial (index i: after i + 1 trials;
    NaN until a trial completes): the curve that compares samplers on one budget. A pruned
    or diverged trial spends budget without lowering it."""
    best, curve = math.inf, []
    for trial in finished_trials(study):
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            best = min(best, trial.value)
        curve.append(best if math.isfinite(best) else math.nan)
    return curve


def steps_saved(study: optuna.Study) -> int:
    """Training steps the pruner spared: for each pruned trial, the steps between where it
    was stopped and the end of its run."""
    return sum(t.user_attrs.get("max_steps", 0) - t.user_attrs["pruned_step"]
               for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
               if "pruned_step" in t.user_attrs)


def steps_run(study: optuna.Study) -> int:
    """Training steps the finished trials ran (a pruned one: up to where it stopped)."""
    return sum(t.user_attrs.get("steps_run", 0) for t in finished_trials(study))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The completed trial with the lowest final eval loss, or None before one completes
    (``study.best_trial`` raises then, which a widget refreshing an empty study must not)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return min(done, key=lambda t: t.value) if done else None


def contributors(study: optuna.Study) -> list[str]:
    """Everyone with a finished trial in the study, in order of their first one."""
    seen: dict[str, None] = {}
    for trial in finished_trials(study):
        seen.setdefault(str(trial.user_attrs.get("contributor", "?")), None)
    return list(seen)
