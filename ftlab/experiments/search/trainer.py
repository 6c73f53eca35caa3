"""``Trainer.hyperparameter_search`` with the Optuna backend, on the same space: what
Hugging Face gives you without ftlab, shown beside :func:`ftlab.experiments.search.search`.

Its limits are the point of showing it:

* it needs a ``model_init`` (a fresh model per trial), not a model;
* it searches ``TrainingArguments`` only (not LoRA rank, data or model fields);
* its study lives in memory unless you pass ``storage=``, and no run is cached: the
  same call trains every trial again, and nothing of a trial survives but its value;
* it records no history, memory or exact match, only the objective (eval loss here).
"""
from __future__ import annotations

import dataclasses
import tempfile
from typing import Any

import optuna
from transformers import PrinterCallback, Trainer, TrainingArguments
from transformers.trainer_utils import BestRun

from ftlab.config.run_config import RunConfig
from ftlab.setup.data import load_data
from ftlab.setup.models import load_model, load_tokenizer
from ftlab.training.arguments import training_arguments
from ftlab.experiments.search.errors import SearchError
from ftlab.experiments.search.space import Space, check_space, suggest

TRAINING_ARGUMENT_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainingArguments))
"""The names ``hyperparameter_search`` can set: a trial's values are set on TrainingArguments."""


def trainer_search_example(base: RunConfig, space: Space, n_trials: int = 4, **study_kwargs: Any) -> BestRun:
    """Run ``Trainer.hyperparameter_search(backend="optuna")`` over ``space`` around ``base``
    and return its ``BestRun`` (trial number, eval loss, params). ``study_kwargs`` go to
    ``optuna.create_study`` (``sampler=``, ``pruner=``, ``storage=``)."""
    space = check_space(base, space)
    outside = [name for name in space if name not in TRAINING_ARGUMENT_FIELDS]
    if outside:
        raise SearchError(f"Trainer.hyperparameter_search sets TrainingArguments only, and {', '.join(outside)} "
                          f"is not one; search it with ftlab.experiments.search.search, which searches any RunConfig field")
    tokenizer = load_tokenizer(base)
    data = load_data(base, tokenizer)

    def model_init(trial: optuna.Trial | None) -> Any:
        return load_model(base, tokenizer)[0]  # a fresh model per trial: the Trainer reinitializes from it

    with tempfile.TemporaryDirectory(prefix="ftlab-hp-") as out:
        trainer = Trainer(model_init=model_init, args=training_arguments(base, out), train_dataset=data.train,
                          eval_dataset=data.validation, data_collator=data.collator)
        trainer.remove_callback(PrinterCallback)  # a dict per logged step would bury the result in a notebook
        return trainer.hyperparameter_search(hp_space=lambda trial: suggest(trial, space), backend="optuna",
                                             n_trials=n_trials, direction="minimize", **study_kwargs)
