"""Published hyperparameters for real models, and the takeaway table that closes each knob chapter.

The workbook tunes a tiny base model, so a learner can see every knob move the loss. Not all of
what they see carries over. Mechanisms do (what warmup protects against, what weight decay pulls
on, how many bytes an optimizer state costs), and so does memory arithmetic. The tiny base's best
learning rate and its ranking of settings do not: they depend on its size, data and step budget.
Each chapter therefore ends with two columns, one for each kind of lesson, and beside them the
values that papers and their authors' scripts used on real models, so the learner's starting
point for a 135M or 7B run comes from there, not from the tiny base.

Every value below was read at the address given, and is printed as it appears there: in its
authors' own repository (script, README or training code), except NEFTune's 5-15 range, which is
from transformers' documentation of ``neftune_noise_alpha``. Values that could only be found in
second-hand summaries (Llama 2's fine-tuning settings, the LoRA paper's GPT-3 table) are left out.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest

from ftlab.foundation.jupyter import ipython_shell
from ftlab.experiments.transfer import RESULTS, Held

__all__ = ["Published", "KNOBS", "PUBLISHED", "published", "takeaway", "show_takeaway"]


@dataclass(frozen=True)
class Published:
    """One published value: what was set, on what, and where it can be checked."""

    knob: str  #: a key of :data:`KNOBS`
    value: str  #: as printed at the source
    setting: str  #: the model, method and data it was used for
    citation: str  #: authors, year, title, arXiv id
    where: str  #: the file or section at the source that shows the value
    url: str  #: the address it was verified at


KNOBS: dict[str, str] = {
    "lr_lora": "Learning rate, LoRA / QLoRA",
    "lr_full": "Learning rate, full fine-tuning",
    "lr_schedule": "Learning-rate schedule",
    "warmup_fraction": "Warmup fraction of steps",
    "weight_decay": "Weight decay (AdamW)",
    "neftune_alpha": "NEFTune α",
    "lora_rank": "LoRA rank r, scale α",
    "lora_dropout": "LoRA dropout",
    "batch_size": "Effective batch size (sequences per step)",
    "max_grad_norm": "Gradient clipping norm",
    "optimizer": "Optimizer",
}
"""The knob keys a chapter may ask for, with the row label the table prints."""

_QLORA = "Dettmers et al. 2023, QLoRA: Efficient Finetuning of Quantized LLMs, arXiv:2305.14314"
_QLORA_SETTING = "QLoRA (NF4 base, LoRA on all linear layers) on LLaMA 7B–65B, Guanaco on OASST1"
_QLORA_URL = "https://github.com/artidoro/qlora/tree/main/scripts"
_QLORA_SCRIPTS = "authors' `scripts/finetune_guanaco_{7b,13b,33b,65b}.sh`"
_QLORA_CODE_URL = "https://github.com/artidoro/qlora/blob/main/qlora.py"
_LORA = "Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models, arXiv:2106.09685"
_LORA_GLUE = "LoRA on RoBERTa base and large, GLUE tasks"
_LORA_GLUE_URL = "https://github.com/microsoft/LoRA/tree/main/examples/NLU"
_LORA_E2E = "LoRA on GPT-2 Medium, E2E NLG"
_LORA_E2E_URL = "https://github.com/microsoft/LoRA/blob/main/examples/NLG/README.md"
_ALPACA = "Taori et al. 2023, Stanford Alpaca: An Instruction-following LLaMA Model (no paper; GitHub repository)"
_ALPACA_SETTING = "full fine-tuning of LLaMA 7B and 13B on Alpaca's 52K instructions"
_ALPACA_URL = "https://github.com/tatsu-lab/stanford_alpaca#fine-tuning"
_NEFTUNE = "Jain et al. 2023, NEFTune: Noisy Embeddings Improve Instruction Finetuning, arXiv:2310.05914"
_NEFTUNE_URL = "https://github.com/neelsjain/NEFTune"

PUBLISHED: tuple[Published, ...] = (
    Published("lr_lora", "2e-4 (7B, 13B); 1e-4 (33B, 65B)", _QLORA_SETTING, _QLORA,
              f"{_QLORA_SCRIPTS}, `--learning_rate`; README, Getting Started: 1e-4 for models larger than 13B",
              _QLORA_URL),
    Published("lr_lora", "2e-4 to 5e-4 (base 4e-4–5e-4, large 2e-4–4e-4)", _LORA_GLUE, _LORA,
              "authors' `examples/NLU/roberta_{base,large}_*.sh`, `--learning_rate`", _LORA_GLUE_URL),
    Published("lr_lora", "2e-4", _LORA_E2E, _LORA, "authors' `examples/NLG/README.md`, `--lr 0.0002`", _LORA_E2E_URL),
    Published("lr_full", "2e-5 (7B); 1e-5 (13B)", _ALPACA_SETTING, _ALPACA,
              "README, Fine-tuning: hyperparameter table", _ALPACA_URL),
    Published("lr_full", "5e-5", "full fine-tuning of LLaMA on Alpaca, with and without NEFTune", _NEFTUNE,
              "authors' `experiment_code/README.md`, Training: `--lr 5e-5`",
              "https://github.com/neelsjain/NEFTune/blob/main/experiment_code/README.md"),
    Published("lr_schedule", "constant", _QLORA_SETTING, _QLORA,
              f"{_QLORA_SCRIPTS}, `--lr_scheduler_type`; `qlora.py`: 'Constant a bit better than cosine'", _QLORA_URL),
    Published("lr_schedule", "cosine", _ALPACA_SETTING, _ALPACA,
              "README, Fine-tuning: `--lr_scheduler_type \"cosine\"`", _ALPACA_URL),
    Published("warmup_fraction", "0.03", _QLORA_SETTING, _QLORA, f"{_QLORA_SCRIPTS}, `--warmup_ratio`", _QLORA_URL),
    Published("warmup_fraction", "0.03", _ALPACA_SETTING, _ALPACA, "README, Fine-tuning: `--warmup_ratio 0.03`",
              _ALPACA_URL),
    Published("warmup_fraction", "0.06", _LORA_GLUE, _LORA, "authors' `examples/NLU/roberta_*.sh`, `--warmup_ratio`",
              _LORA_GLUE_URL),
    Published("weight_decay", "0.0", _QLORA_SETTING, _QLORA,
              f"{_QLORA_SCRIPTS}, `--weight_decay`; `qlora.py`: 'use lora dropout instead for regularization'",
              _QLORA_URL),
    Published("weight_decay", "0", _ALPACA_SETTING, _ALPACA, "README, Fine-tuning: hyperparameter table",
              _ALPACA_URL),
    Published("weight_decay", "0.1", _LORA_GLUE, _LORA, "authors' `examples/NLU/roberta_*.sh`, `--weight_decay`",
              _LORA_GLUE_URL),
    Published("weight_decay", "0.01", _LORA_E2E, _LORA, "authors' `examples/NLG/README.md`, `--weight_decay`",
              _LORA_E2E_URL),
    Published("neftune_alpha", "5 to 15", "the NEFTune paper's instruction fine-tuning experiments", _NEFTUNE,
              "transformers `TrainingArguments.neftune_noise_alpha`: 'The original paper used values in the "
              "range [5.0, 15.0]'",
              "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments"),
    Published("neftune_alpha", "5", "the authors' example code, LLaMA on Alpaca", _NEFTUNE,
              "README, Code: `NEFTune(model, noise_alpha=5)`; `experiment_code/README.md`: `--neftune_alpha 5`",
              _NEFTUNE_URL),
    Published("lora_rank", "r=64, α=16", _QLORA_SETTING, _QLORA, f"{_QLORA_SCRIPTS}, `--lora_r`, `--lora_alpha`",
              _QLORA_URL),
    Published("lora_rank", "r=8, α=16", _LORA_GLUE, _LORA,
              "authors' `examples/NLU/roberta_*.sh`, `--lora_r`, `--lora_alpha`", _LORA_GLUE_URL),
    Published("lora_dropout", "0.1 (7B); 0.05 (13B, 33B, 65B)", _QLORA_SETTING, _QLORA,
              f"{_QLORA_SCRIPTS}, `--lora_dropout`", _QLORA_URL),
    Published("lora_dropout", "0.1", _LORA_E2E, _LORA, "authors' `examples/NLG/README.md`, `--lora_dropout`",
              _LORA_E2E_URL),
    Published("batch_size", "16 (1 per device × 16 accumulation steps)", _QLORA_SETTING, _QLORA,
              f"{_QLORA_SCRIPTS}, `--per_device_train_batch_size`, `--gradient_accumulation_steps`", _QLORA_URL),
    Published("batch_size", "128 (4 GPUs × 4 per device × 8 accumulation steps)", _ALPACA_SETTING, _ALPACA,
              "README, Fine-tuning: hyperparameter table and `torchrun` command", _ALPACA_URL),
    Published("max_grad_norm", "0.3", _QLORA_SETTING, _QLORA,
              f"{_QLORA_SCRIPTS}, `--max_grad_norm`; `qlora.py`: 'tuned and works well for all models tested'",
              _QLORA_URL),
    Published("optimizer", "paged AdamW, 32-bit states (`paged_adamw_32bit`)", _QLORA_SETTING, _QLORA,
              "`qlora.py`, `TrainingArguments` default `optim` (the Guanaco scripts keep it)", _QLORA_CODE_URL),
)
"""The published values, several per knob where sources differ: the spread is part of the lesson."""


def published(knobs: Sequence[str]) -> list[Published]:
    """The entries for ``knobs``, in the order asked, each knob once.

    Unknown names raise ValueError listing the known ones, so a typo in a chapter fails when it
    runs instead of printing a table with a row silently missing.
    """
    if isinstance(knobs, str):
        raise TypeError(f"knobs must be a sequence of knob names, not the string {knobs!r}")
    unknown = [k for k in knobs if k not in KNOBS]
    if unknown:
        raise ValueError(f"unknown knob(s) {unknown}; known knobs: {', '.join(KNOBS)}")
    return [entry for knob in dict.fromkeys(knobs) for entry in PUBLISHED if entry.knob == knob]


def _cell(text: str) -> str:
    """Text safe inside one Markdown table cell: a ``|`` would start a new column and a newline
    would end the row."""
    return " ".join(str(text).replace("|", r"\|").split())


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def takeaway(transfers: Sequence[str], tiny_only: Sequence[str], knobs: Sequence[str] = (),
             held: Sequence[Held] = (), held_budget: str = "") -> str:
    """The chapter's takeaway as Markdown: a two-column table of what transfers to a 135M or 7B
    model and what belongs to the tiny base, then the published values for ``knobs``.

    The chapter writes the cell texts from its own outputs (and formats their numbers); this only
    lays them out. The two columns are independent lists, so the shorter one is padded with empty
    cells: no lesson is dropped because the other column had fewer.

    ``held``: rows of :func:`ftlab.experiments.transfer.transfer_rows`, shown as a table with the
    column "Held on SmolLM2?" (``held_budget`` says each base's budget), then what to carry
    instead wherever a verdict did not hold.
    """
    for name, column in (("transfers", transfers), ("tiny_only", tiny_only)):
        if isinstance(column, str):
            raise TypeError(f"{name} must be a sequence of cell texts, not the string {column!r}")
    if not transfers and not tiny_only:
        raise ValueError("a takeaway needs at least one line in transfers or tiny_only")
    entries = published(knobs)
    lines = ["**Takeaway**", "",
             _row(["What transfers to a 135M or 7B model", "What belongs to the tiny base"]), "| --- | --- |"]
    lines += [_row(pair) for pair in zip_longest(transfers, tiny_only, fillvalue="")]
    if held:
        lines += ["", f"**Held on SmolLM2-135M?** The same study on LoRA over SmolLM2 (weights de-quantized from "
                      f"Q4_1), each arm at its own best rate; {held_budget} (`{RESULTS}`)", "",
                  _row(["Verdict carried", "Tiny base", "SmolLM2-135M", "Held on SmolLM2?"]), "| --- | --- | --- | --- |"]
        lines += [_row([h.carried, h.tiny, h.smollm2, h.held]) for h in held]
        instead = [h.instead for h in held if h.instead]
        if instead:
            lines += ["", "Where a verdict did not hold, carry instead:", ""] + [f"- {_cell(text)}" for text in instead]
    if entries:
        lines += ["", "**Published values for real models**", "",
                  _row(["Knob", "Value", "Setting", "Source"]), "| --- | --- | --- | --- |"]
        lines += [_row([KNOBS[e.knob], e.value, e.setting, f"[{e.citation}]({e.url}): {e.where}"]) for e in entries]
    return "\n".join(lines) + "\n"


def show_takeaway(transfers: Sequence[str], tiny_only: Sequence[str], knobs: Sequence[str] = (),
                  held: Sequence[Held] = (), held_budget: str = "") -> None:
    """Display :func:`takeaway` as rendered Markdown in a notebook (so it is saved as a table),
    or print the Markdown source in a script or test."""
    text = takeaway(transfers, tiny_only, knobs, held, held_budget)
    if ipython_shell() is None:
        print(text)
        return
    from IPython.display import Markdown, display
    display(Markdown(text))
