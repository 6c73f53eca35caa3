"""RunConfig: every knob of one fine-tuning experiment, validated when it is made.

Names follow Hugging Face ``TrainingArguments`` wherever a name exists, so a learner can
carry a setting straight from a notebook to their own Trainer script. A config is plain
data: it round-trips through JSON and has a stable content hash, which is how a finished
run is found again in the run cache instead of being retrained.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import inspect
import json
import math
from numbers import Real
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import SchedulerType, get_scheduler
from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION
from transformers.training_args import OptimizerNames

from ftlab.errors import ConfigError, ConfigFileError
from ftlab.config.optimizers import OPTIM_ARGS_KEYS, OPTIMIZER_TABLE, format_optim_args, parse_optim_args

SCHEDULER_TYPES: tuple[str, ...] = tuple(s.value for s in SchedulerType if s.value != "reduce_lr_on_plateau")
"""Every transformers LR scheduler that runs from a step count (plateau needs eval metrics)."""

OPTIMIZERS: tuple[str, ...] = tuple(OPTIMIZER_TABLE)
"""Optimizers a chapter may compare; each is a transformers ``OptimizerNames`` value, and
each is priced by the memory predictor from the same table (:mod:`ftlab.config.optimizers`)."""

DEFAULT_SYSTEM_PROMPT = "You are a careful financial assistant. Reply with the final answer only."

BYTE_LEVEL_PRESETS: tuple[str, ...] = ("tiny", "tiny-pretrained")
"""Presets whose tokenizer reads bytes: one token per byte, so a text is 3-4x as many tokens."""
DEFAULT_MAX_SEQ_LENGTH = 128
"""``max_seq_length`` left unset, for SmolLM2 and any hub or local model: the finance examples
with the default system prompt are 40-70 SmolLM2 tokens."""
BYTE_LEVEL_MAX_SEQ_LENGTH = 384
"""``max_seq_length`` left unset, for the byte-level presets: the same finance examples are
146-262 bytes with the default system prompt, so 128 would drop every one of them."""

_SCHEDULER_FILLED = frozenset({"optimizer", "num_warmup_steps", "num_training_steps", "last_epoch"})
"""Arguments of a schedule function that ``get_scheduler`` (and so Trainer) fills in itself."""

assert set(OPTIMIZERS) <= {o.value for o in OptimizerNames}


def _require(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(name, value, expected)


@dataclass(frozen=True)
class RunConfig:
    """One experiment: model, data, optimisation and memory knobs, plus evaluation sizes.

    Construct it with keyword arguments; a value outside its range, or a name that is not
    a field (``lerning_rate``: the message suggests ``learning_rate``), raises ConfigError
    naming the field, the value and what is allowed, before any model is loaded.
    ``dataclasses.replace(cfg, learning_rate=1e-3)`` (or ``cfg.replace(...)``) makes a
    variant and validates it again.

    ``max_seq_length`` left unset (``None``) means the model's own default, so every preset
    trains as it is: 128 tokens for SmolLM2 and any hub or local model, 384 for the
    byte-level presets ``tiny`` and ``tiny-pretrained``, whose tokens are single bytes (the
    finance examples with the default system prompt are 146-262 bytes: at 128 not one
    would fit). The config then holds the number (its JSON and hash never say ``None``),
    and ``cfg.replace(model=...)`` picks the new model's default again unless a length was
    given. A length you set is always kept.
    """

    # model
    model: str = "smollm2-135m"
    lora_r: int = 8
    """LoRA rank; 0 means full fine-tuning of every weight."""
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    use_rslora: bool = False
    """Scale the adapter by lora_alpha / sqrt(lora_r) (rank-stabilised LoRA) instead of
    lora_alpha / lora_r, so a higher rank is not also a smaller step (chapter 06)."""
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    bnb_4bit_use_double_quant: bool = True
    dropout: float = 0.0
    """Attention dropout inside the model (the model's own regulariser, off in SmolLM2)."""

    # data
    dataset: str = "finance"
    prompt_field: str = "prompt"
    response_field: str = "response"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_seq_length: int | None = None
    """Tokens per example (longer examples are cut, ones whose prompt alone is longer are
    dropped); None: the model's default (see the class docstring)."""
    packing: bool = False
    completion_only_loss: bool = True
    """True: only the answer tokens (the response and its closing turn token) carry loss, every
    prompt token is masked with label -100; False: every token of the conversation does (system
    turn, question, template tokens too). TRL's ``SFTConfig`` name. It changes the training
    labels only: validation and test losses are always over answer tokens, so the two settings
    are scored on the same scale (chapter 10)."""
    train_size: int = 0
    """Use only the first N training examples (0 = all): makes multi-epoch overfitting visible."""

    # optimisation (TrainingArguments names)
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "linear"
    lr_scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    warmup_steps: float = 0
    """An int >= 1 is a step count; a float in [0, 1) is a fraction of max_steps (v5 semantics)."""
    weight_decay: float = 0.0
    optim: str = "adamw_torch"
    optim_args: str = ""
    """Extra optimizer arguments as Trainer reads them, ``"momentum=0.9"`` for SGD with
    momentum; only ``sgd`` and ``rmsprop`` take any (see ``ftlab.config.optimizers.OPTIM_ARGS_KEYS``)."""
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    """Added to the root of Adam's second moment before dividing: ``update = m / (sqrt(v) + eps)``.
    It bounds the step of a weight whose gradients have been tiny (there ``sqrt(v)`` is near 0);
    TrainingArguments' name and default."""
    max_grad_norm: float = 1.0
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_steps: int = 60
    early_stopping_patience: int = 0
    """Stop after this many evaluations without a lower eval loss, and end with the weights of
    the best one (Trainer's ``EarlyStoppingCallback`` with ``load_best_model_at_end``); 0 = off."""
    gradient_checkpointing: bool = False
    neftune_noise_alpha: float | None = None
    label_smoothing_factor: float = 0.0
    bf16: bool = False
    fp16: bool = False
    seed: int = 42

    # evaluation
    eval_steps: int = 20
    eval_size: int = 64
    """Validation examples used for eval loss."""
    exact_match_size: int = 32
    """Fixed held-out test examples scored by greedy generation at the end of the run."""
    test_size: int = 0
    """Test examples (the first N of the test split) whose answer-token loss and accuracy the
    run records at its end (0 = none). The validation split chooses rates and epochs; this
    split, which nothing is chosen on, reports the verdict (:mod:`ftlab.experiments.protocol`)."""
    max_new_tokens: int = 16

    def __post_init__(self) -> None:
        # tuples keep the config hashable and JSON-stable even when given lists; one module
        # name given as a string is a list of one (not a tuple of its characters)
        targets = self.lora_target_modules
        _require(isinstance(targets, (str, list, tuple)), "lora_target_modules", targets,
                 "a list of module names such as ['q_proj', 'v_proj'], or 'all-linear'")
        object.__setattr__(self, "lora_target_modules", (targets,) if isinstance(targets, str) else tuple(targets))
        _require(isinstance(self.lr_scheduler_kwargs, dict), "lr_scheduler_kwargs", self.lr_scheduler_kwargs,
                 "a dict of keyword arguments for the scheduler, e.g. {'min_lr_rate': 0.1}; {} for none")
        object.__setattr__(self, "lr_scheduler_kwargs", dict(self.lr_scheduler_kwargs))
        # not a field: whether max_seq_length follows the model (replace(model=...) keeps it following)
        object.__setattr__(self, "_seq_from_model", self.max_seq_length is None)
        if self.max_seq_length is None and isinstance(self.model, str):
            object.__setattr__(self, "max_seq_length", default_max_seq_length(self.model))
        self._validate()
        self._normalize()

    def _normalize(self) -> None:
        """One spelling per setting, so equal experiments get equal hashes (and are read from
        the run cache instead of retrained): ``weight_decay=0`` is ``0.0``, a NEFTune alpha
        of 0 is ``None`` (off), and ``warmup_steps=5.0`` is the step count ``5``."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and f.name != "warmup_steps" and _is_int(value):
                object.__setattr__(self, f.name, float(value))
        if self.neftune_noise_alpha is not None:
            alpha = float(self.neftune_noise_alpha)
            object.__setattr__(self, "neftune_noise_alpha", alpha if alpha > 0 else None)
        warmup = self.warmup_steps
        object.__setattr__(self, "warmup_steps", int(warmup) if float(warmup).is_integer() else float(warmup))
        object.__setattr__(self, "optim_args", format_optim_args(parse_optim_args(self.optim_args)))

    def _validate(self) -> None:
        r = _require
        r(isinstance(self.model, str) and self.model.strip() != "", "model", self.model,
          "give a preset ('tiny', 'smollm2-135m'), a local model folder or a hub id")
        r(_is_int(self.lora_r) and self.lora_r >= 0, "lora_r", self.lora_r, "an int >= 0 (0 = full fine-tune)")
        r(_is_int(self.lora_alpha) and self.lora_alpha > 0, "lora_alpha", self.lora_alpha, "an int > 0, typically 2 x lora_r")
        r(is_finite_number(self.lora_dropout) and 0 <= self.lora_dropout < 1, "lora_dropout", self.lora_dropout, "a float in [0, 1)")
        r(len(self.lora_target_modules) > 0 and all(isinstance(m, str) and m for m in self.lora_target_modules),
          "lora_target_modules", self.lora_target_modules, "a non-empty list of module names such as ['q_proj', 'v_proj'] or ['all-linear']")
        r(not (self.load_in_4bit and self.load_in_8bit), "load_in_8bit", self.load_in_8bit,
          "choose one of load_in_4bit and load_in_8bit, not both")
        r(not ((self.load_in_4bit or self.load_in_8bit) and self.lora_r == 0), "lora_r", self.lora_r,
          "a quantized model cannot be fully fine-tuned: set lora_r > 0 (QLoRA) or turn quantization off")
        r(is_finite_number(self.dropout) and 0 <= self.dropout < 1, "dropout", self.dropout, "a float in [0, 1)")
        r(isinstance(self.dataset, str) and self.dataset.strip() != "", "dataset", self.dataset,
          "'finance' (shipped), a .jsonl/.json/.csv file or a datasets name")
        for name in ("prompt_field", "response_field"):
            r(isinstance(getattr(self, name), str) and getattr(self, name).strip() != "", name, getattr(self, name),
              "the name of a column of the data set, e.g. 'prompt' / 'response'")
        r(isinstance(self.system_prompt, str), "system_prompt", self.system_prompt, "a string; '' for no system turn")
        for name in ("use_rslora", "load_in_4bit", "load_in_8bit", "bnb_4bit_use_double_quant", "packing", "gradient_checkpointing",
                     "bf16", "fp16"):
            r(isinstance(getattr(self, name), bool), name, getattr(self, name), "True or False")
        r(isinstance(self.completion_only_loss, bool), "completion_only_loss", self.completion_only_loss,
          "True (loss on the answer tokens only, the prompt masked) or False (loss on every token)")
        r(_is_int(self.max_seq_length) and 16 <= self.max_seq_length <= 32768, "max_seq_length", self.max_seq_length, "an int in [16, 32768]")
        r(_is_int(self.train_size) and self.train_size >= 0, "train_size", self.train_size, "an int >= 0 (0 = the whole split)")
        r(_is_int(self.test_size) and self.test_size >= 0, "test_size", self.test_size,
          "an int >= 0: test examples scored at the end of the run (0 = none)")
        r(is_finite_number(self.learning_rate) and 0 < self.learning_rate < 1, "learning_rate", self.learning_rate,
          "a float in (0, 1); fine-tuning uses about 1e-5 (full) to 1e-3 (LoRA)")
        r(self.lr_scheduler_type in SCHEDULER_TYPES, "lr_scheduler_type", self.lr_scheduler_type,
          f"one of {', '.join(SCHEDULER_TYPES)}")
        r(is_finite_number(self.warmup_steps) and self.warmup_steps >= 0 and (self.warmup_steps < 1 or float(self.warmup_steps).is_integer()),
          "warmup_steps", self.warmup_steps, "an int >= 0 (steps) or a float in [0, 1) (fraction of max_steps)")
        r(is_finite_number(self.weight_decay) and 0 <= self.weight_decay <= 10, "weight_decay", self.weight_decay, "a float in [0, 10]; 0.0 to 0.1 is usual")
        r(self.optim in OPTIMIZERS, "optim", self.optim, f"one of {', '.join(OPTIMIZERS)}")
        _check_optim_args(self.optim, self.optim_args)
        r(is_finite_number(self.adam_beta1) and 0 <= self.adam_beta1 < 1, "adam_beta1", self.adam_beta1, "a float in [0, 1)")
        r(is_finite_number(self.adam_beta2) and 0 <= self.adam_beta2 < 1, "adam_beta2", self.adam_beta2, "a float in [0, 1)")
        r(is_finite_number(self.adam_epsilon) and 0 < self.adam_epsilon <= 1e-2, "adam_epsilon", self.adam_epsilon,
          "a float in (0, 1e-2]; 1e-8 is the default, 1e-6 to 1e-5 is sometimes used for bf16 or tiny gradients")
        r(is_finite_number(self.max_grad_norm) and self.max_grad_norm >= 0, "max_grad_norm", self.max_grad_norm, "a float >= 0 (0 disables clipping)")
        r(_is_int(self.per_device_train_batch_size) and self.per_device_train_batch_size >= 1,
          "per_device_train_batch_size", self.per_device_train_batch_size, "an int >= 1")
        r(_is_int(self.gradient_accumulation_steps) and self.gradient_accumulation_steps >= 1,
          "gradient_accumulation_steps", self.gradient_accumulation_steps, "an int >= 1")
        r(_is_int(self.max_steps) and self.max_steps >= 0, "max_steps", self.max_steps, "an int >= 0 (0 = evaluate only)")
        r(_is_int(self.early_stopping_patience) and self.early_stopping_patience >= 0, "early_stopping_patience",
          self.early_stopping_patience, "an int >= 0: evaluations without improvement before stopping (0 = off)")
        r(self.neftune_noise_alpha is None or (is_finite_number(self.neftune_noise_alpha) and self.neftune_noise_alpha >= 0),
          "neftune_noise_alpha", self.neftune_noise_alpha, "None (off) or a float >= 0; the paper uses 5, 10 or 15")
        r(is_finite_number(self.label_smoothing_factor) and 0 <= self.label_smoothing_factor < 1,
          "label_smoothing_factor", self.label_smoothing_factor, "a float in [0, 1); 0.1 is common")
        r(not (self.bf16 and self.fp16), "fp16", self.fp16, "choose one of bf16 and fp16, not both")
        r(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an int >= 0")
        r(_is_int(self.eval_steps) and self.eval_steps >= 1, "eval_steps", self.eval_steps, "an int >= 1")
        r(_is_int(self.eval_size) and self.eval_size >= 1, "eval_size", self.eval_size, "an int >= 1")
        r(_is_int(self.exact_match_size) and self.exact_match_size >= 0, "exact_match_size", self.exact_match_size,
          "an int >= 0 (0 skips the generation score)")
        r(_is_int(self.max_new_tokens) and self.max_new_tokens >= 1, "max_new_tokens", self.max_new_tokens, "an int >= 1")
        r(isinstance(self.lr_scheduler_kwargs, dict) and all(isinstance(k, str) for k in self.lr_scheduler_kwargs),
          "lr_scheduler_kwargs", self.lr_scheduler_kwargs, "a dict of keyword arguments for the scheduler, e.g. {'min_lr_rate': 0.1}")
        _check_scheduler_kwargs(self)

    # --- derived values -------------------------------------------------------------
    @property
    def is_lora(self) -> bool:
        return self.lora_r > 0

    @property
    def method(self) -> str:
        """'full', 'lora' or 'qlora': the memory story a learner compares in chapter 06."""
        if not self.is_lora:
            return "full"
        return "qlora" if (self.load_in_4bit or self.load_in_8bit) else "lora"

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    # --- serialization ----------------------------------------------------------------
    def replace(self, **changes: Any) -> "RunConfig":
        """A validated copy with some fields changed (unknown names raise ConfigError).

        A config whose ``max_seq_length`` was left to the model picks the new model's
        default when ``model`` changes (``dataclasses.replace`` keeps the old number)."""
        _check_names(changes)
        if "model" in changes and "max_seq_length" not in changes and getattr(self, "_seq_from_model", False):
            changes["max_seq_length"] = None
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lora_target_modules"] = list(self.lora_target_modules)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        if not isinstance(data, dict):
            raise ConfigFileError(f"a RunConfig needs a JSON object of fields like {{\"model\": \"tiny\", "
                                  f"\"learning_rate\": 0.001}}, got a {type(data).__name__}")
        if "config" in data and "history" in data:
            raise ConfigFileError("this is a saved Run, not a RunConfig: its config is under the key 'config' "
                                  "(RunConfig.from_dict(run['config']), or Run.load(path).config)")
        _check_names(data)
        return cls(**data)

    @classmethod
    def from_json(cls, text: str, source: str = "RunConfig JSON") -> "RunConfig":
        """The config of ``to_json`` text; ``source`` (a file name) is named in errors."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigFileError(f"{source}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}; "
                                  f"fix the text there (a missing comma or quote, a trailing comma, a comment?) or "
                                  f"write it with RunConfig(...).to_json()") from None
        return cls.from_dict(data)

    def hash(self) -> str:
        """A short content hash: equal configs give equal hashes across sessions and machines.

        Fields left at their default are not hashed, so adding a field with a default to
        RunConfig changes no existing hash (and invalidates no cached run); a default is
        therefore never changed in place: a new behaviour gets a new value or a new field."""
        defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                    for f in dataclasses.fields(self)
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
        data = self.to_dict()
        kept = {k: v for k, v in data.items() if k not in defaults or v != _plain(defaults[k])}
        canonical = json.dumps(kept, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _plain(value: Any) -> Any:
    """A default as ``to_dict`` writes it (tuples become lists), for comparing with it."""
    return list(value) if isinstance(value, tuple) else value


def default_max_seq_length(model: str) -> int:
    """The ``max_seq_length`` a config gets when none is given (see :class:`RunConfig`)."""
    return BYTE_LEVEL_MAX_SEQ_LENGTH if model in BYTE_LEVEL_PRESETS else DEFAULT_MAX_SEQ_LENGTH


_TRAINING_ARGUMENT_NAMES = {"warmup_ratio": "warmup_steps", "num_train_epochs": "max_steps", "lr": "learning_rate",
                            "batch_size": "per_device_train_batch_size", "scheduler": "lr_scheduler_type",
                            "optimizer": "optim", "gradient_clipping": "max_grad_norm", "max_length": "max_seq_length",
                            "eps": "adam_epsilon", "epsilon": "adam_epsilon", "train_on_inputs": "completion_only_loss",
                            "assistant_only_loss": "completion_only_loss"}
"""Names a learner brings from elsewhere, and the RunConfig field that holds the setting."""


def _check_names(data: dict[str, Any]) -> None:
    known = [f.name for f in dataclasses.fields(RunConfig)]
    for name in data:
        if name not in known:
            text = str(name)
            close = difflib.get_close_matches(text, known, n=3, cutoff=0.6)
            close += sorted(k for k in known if k.split("_")[0] == text.split("_")[0] and k not in close)
            if text in _TRAINING_ARGUMENT_NAMES and _TRAINING_ARGUMENT_NAMES[text] not in close:
                close.insert(0, _TRAINING_ARGUMENT_NAMES[text])
            hint = f"; did you mean {', '.join(close)}?" if close else "; RunConfig's fields are listed by help(RunConfig)"
            raise ConfigError(text, data[name], f"RunConfig has no field '{text}'{hint}")


def _checked_init(init: Any) -> Any:
    """The dataclass ``__init__`` with unknown keyword names refused by :func:`_check_names`
    (a typo otherwise raises a bare TypeError); ``dataclasses.replace`` goes through it too."""

    @functools.wraps(init)
    def __init__(self: RunConfig, *args: Any, **kwargs: Any) -> None:
        _check_names(kwargs)
        init(self, *args, **kwargs)

    return __init__


RunConfig.__init__ = _checked_init(RunConfig.__init__)  # type: ignore[method-assign]


def scheduler_arguments(name: str) -> tuple[set[str] | None, set[str]]:
    """(accepted, required) ``lr_scheduler_kwargs`` keys of a scheduler, read from the
    signature of its schedule function; accepted is None when it takes any keyword.

    ``constant`` and ``constant_with_warmup`` accept none: ``get_scheduler`` calls them
    without the extra arguments, so any key given would be silently ignored."""
    params = inspect.signature(TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(name)]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None, set()
    if name in ("constant", "constant_with_warmup"):
        return set(), set()
    own = {n: p for n, p in params.items() if n not in _SCHEDULER_FILLED}
    return set(own), {n for n, p in own.items() if p.default is inspect.Parameter.empty}


def resolve_warmup_steps(warmup_steps: int | float, num_training_steps: int) -> int:
    """Turn a warmup setting into a step count the way `TrainingArguments.get_warmup_steps` does.

    transformers v5 dropped `warmup_ratio` and folded it into `warmup_steps`: a value >= 1 is a number
    of steps (truncated to int), a value in [0, 1) is a fraction of the run, rounded UP with
    `math.ceil`. Rounding up means any non-zero ratio gives at least one warmup step, so "warmup 0.01"
    on a 50-step run still warms up (1 step) instead of silently doing nothing.
    """
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, float)):
        raise ValueError(f"warmup_steps must be an int >= 0 or a float ratio in [0, 1), got {warmup_steps!r}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if warmup_steps >= 1:
        return int(warmup_steps)
    return math.ceil(num_training_steps * warmup_steps)


def _check_scheduler_kwargs(config: RunConfig) -> None:
    """``lr_scheduler_kwargs`` checked against the scheduler now, not after the data is loaded:
    names from the schedule function's signature, then the scheduler is really built (as
    Trainer will) on a throwaway optimizer, which catches the rest (``cosine_with_min_lr``
    needs exactly one of ``min_lr`` / ``min_lr_rate``)."""
    name, kwargs = config.lr_scheduler_type, config.lr_scheduler_kwargs
    accepted, required = scheduler_arguments(name)
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            takes = f"it takes {', '.join(sorted(accepted))}" if accepted else "it takes none"
            raise ConfigError("lr_scheduler_kwargs", kwargs, f"{', '.join(map(repr, unknown))} is not an argument of the "
                              f"{name!r} scheduler ({takes}); remove it or pick the scheduler it belongs to")
        missing = sorted(required - set(kwargs))
        if missing:
            raise ConfigError("lr_scheduler_kwargs", kwargs, f"the {name!r} scheduler needs {', '.join(missing)}, e.g. "
                              f"ftlab.lessons.schedules.default_scheduler_kwargs({name!r}, max_steps)")
    steps = max(int(config.max_steps), 1)
    warmup = resolve_warmup_steps(config.warmup_steps, steps)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    try:
        get_scheduler(name, optimizer, num_warmup_steps=int(warmup), num_training_steps=steps,
                      scheduler_specific_kwargs=dict(kwargs))
    except (TypeError, ValueError) as err:
        raise ConfigError("lr_scheduler_kwargs", kwargs, f"the {name!r} scheduler refuses them: {err}; "
                          f"ftlab.lessons.schedules.default_scheduler_kwargs({name!r}, max_steps) gives a set that works") from None


def _check_optim_args(optim: str, text: object) -> None:
    """``optim_args`` parsed as Trainer will, and its keys checked against the optimizer that
    reads them: a key the chosen optimizer ignores would change nothing without a word."""
    if not isinstance(text, str):
        raise ConfigError("optim_args", text, "a string of key=value pairs, e.g. 'momentum=0.9'; '' for none")
    try:
        values = parse_optim_args(text)
    except ValueError as err:
        raise ConfigError("optim_args", text, f"{err}; write key=value pairs separated by commas, e.g. "
                          f"'momentum=0.9,nesterov=true'") from None
    accepted = OPTIM_ARGS_KEYS.get(optim, frozenset())
    unknown = sorted(set(values) - accepted)
    if unknown:
        takes = f"it reads {', '.join(sorted(accepted))}" if accepted else "it reads none (only sgd and rmsprop do)"
        raise ConfigError("optim_args", text, f"{', '.join(unknown)} is not read by optim={optim!r} ({takes}); "
                          f"remove it or choose the optimizer it belongs to")
    if values.get("nesterov") and (not values.get("momentum") or values.get("dampening")):
        raise ConfigError("optim_args", text, "Nesterov momentum needs a momentum > 0 and no dampening (torch's SGD "
                          "refuses it otherwise); add momentum=0.9 or drop nesterov")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_finite_number(v: object) -> bool:
    """A real number that is not a bool, NaN or infinite: the one check every knob, widget
    and from-scratch lesson applies before trusting a value (``True`` is an int in Python,
    and a NaN learning rate would only show up as a NaN loss many steps later)."""
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v))


