"""Padding, packing and naive packing, measured side by side (chapter 07b).

Three ways to lay the same tokenized examples out in batches:

* ``padding``: ``batch_size`` examples a batch, each padded on the right to the longest
  one in its batch (dynamic padding, what ``train()`` does without packing). The padded
  slots cost compute and activation memory and teach nothing.
* ``packed``: whole examples placed one after another in rows of ``seq_len`` tokens, each
  restarting its ``position_ids`` at 0, no attention mask (exactly the rows ``train()``
  builds with ``packing=True``, from :func:`ftlab.setup.data.pack_examples`). transformers reads
  the restarts as sequence boundaries and builds a block-diagonal causal mask, so no
  example attends to another: every token's loss is what it would be alone. Rows are
  filled best-fit decreasing (:func:`ftlab.setup.data.pack_groups`): examples stay whole,
  longest placed first, each into the row it fills most tightly, which leaves far less
  padding at the rows' ends than filling them in order.
* ``naive``: the same rows with one causal mask over the whole row and positions running
  on: every example attends to the ones packed before it. Cheap, and what a row of
  concatenated text gets in pretraining, but the loss of an example now depends on its
  neighbours (:func:`contamination` measures by how much).

The block-diagonal mask only appears when transformers can see the restarts: it looks for
them only when no attention mask and no KV cache are passed. An all-ones
``attention_mask`` (what a tokenizer or a generic collator adds) or ``use_cache=True``
silently turns a packed row back into one sequence, with positions that now repeat;
:func:`contamination` measures that trap too.

Packing pays when lengths are skewed (:mod:`ftlab.setup.skewed_mix`): then padding fills most
of every batch. With sdpa or eager attention (a CPU) the attention over a packed row still
computes the masked-out blocks, and the mask itself costs memory: each layer saves it as a
float ``batch x seq x seq`` tensor for backward, plus rotary tables per row, where naive
packing's plain causal mask needs neither. So the gain is the padding removed, no more. On
a GPU, FlashAttention's variable-length kernels skip the masked-out blocks and need no
padding at all: padding-free attention. transformers 5 takes that path from restarted
``position_ids`` only for a batch flattened into one row (``DataCollatorWithFlattening``);
given several packed rows, FlashAttention attends over each whole row, which is naive
packing. ftlab loads models with sdpa, where packed rows of any batch size stay apart.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from ftlab.setup.data import Collator, pack_examples, pack_groups
from ftlab.errors import DataError
from ftlab.lessons.timing import Timings, interleaved
from ftlab.memory import ActivationMeter

LAYOUTS = ("padding", "packed", "naive")
Example = Mapping[str, Sequence[int]]
"""A tokenized example: ``input_ids`` and ``labels`` (-100 on prompt tokens), as
:func:`ftlab.setup.data.encode_example` makes it and ``load_data(config).train`` holds it."""


@dataclass(frozen=True)
class Batch:
    """One batch of a layout: the model's inputs and what they hold."""

    inputs: dict[str, torch.Tensor]
    real_tokens: int
    """Tokens of examples (not padding): what tokens per second counts."""
    supervised_tokens: int
    """Tokens the loss scores, counted as transformers' causal-LM loss counts them."""
    examples: int

    @property
    def slots(self) -> int:
        """Token positions the model computes, padding included."""
        return self.inputs["input_ids"].numel()


def _tokenized(examples: Sequence[Example], seq_len: int) -> list[dict[str, list[int]]]:
    """The examples as plain lists (a ``datasets.Dataset`` iterates as dicts), checked."""
    rows = [dict(ex) for ex in examples]
    if not rows:
        raise DataError("examples is empty; give tokenized examples, e.g. load_data(config).train")
    if "position_ids" in rows[0]:
        raise DataError("examples are already packed rows; load them with RunConfig.packing=False, the layouts pack them")
    if "input_ids" not in rows[0] or "labels" not in rows[0]:
        raise DataError(f"an example has fields {sorted(rows[0])}; it needs input_ids and labels "
                        f"(tokenized, as load_data(config).train holds them)")
    longest = max(len(ex["input_ids"]) for ex in rows)
    if longest > seq_len:
        raise DataError(f"seq_len={seq_len} is shorter than the longest example ({longest} tokens); raise seq_len "
                        f"to at least {longest}, or load the data with RunConfig.max_seq_length={seq_len}")
    return [{"input_ids": list(ex["input_ids"]), "labels": list(ex["labels"])} for ex in rows]


def layout_batches(examples: Sequence[Example], layout: str, batch_size: int, seq_len: int,
                   pad_token_id: int) -> list[Batch]:
    """Every example exactly once, laid out as ``layout`` in batches of ``batch_size``
    examples in order (``padding``) or of ``batch_size`` rows of ``seq_len`` tokens in the
    packer's order (``packed``, ``naive``; :func:`ftlab.setup.data.pack_groups`)."""
    if layout not in LAYOUTS:
        raise DataError(f"layout={layout!r} is not a layout; use one of {', '.join(LAYOUTS)}")
    if batch_size < 1:
        raise DataError(f"batch_size={batch_size} must be at least 1")
    examples = _tokenized(examples, seq_len)
    collate = Collator(pad_token_id)
    lengths = [len(ex["input_ids"]) for ex in examples]
    if layout == "padding":
        groups = [list(range(i, min(i + batch_size, len(examples)))) for i in range(0, len(examples), batch_size)]
        return [_batch(collate([examples[i] for i in g]), sum(lengths[i] for i in g), len(g)) for g in groups]
    rows = pack_examples(examples, seq_len, pad_token_id)
    groups = pack_groups(lengths, seq_len)  # what each of those rows holds
    batches = []
    for b in range(0, len(rows), batch_size):
        inputs = collate(rows[b:b + batch_size])
        if layout == "naive":
            del inputs["position_ids"]  # positions 0..seq_len-1 and one causal mask over the row
        held = [i for g in groups[b:b + batch_size] for i in g]
        batches.append(_batch(inputs, sum(lengths[i] for i in held), len(held)))
    return batches


def _batch(inputs: dict[str, torch.Tensor], real_tokens: int, examples: int) -> Batch:
    supervised = int((inputs["labels"][:, 1:] != -100).sum())  # the causal-LM loss shifts labels by one
    return Batch(inputs=inputs, real_tokens=real_tokens, supervised_tokens=supervised, examples=examples)


def padding_fraction(batches: Sequence[Batch]) -> float:
    """The share of computed token positions that are padding."""
    slots = sum(b.slots for b in batches)
    return 1 - sum(b.real_tokens for b in batches) / slots


def first_steps(examples: Sequence[Example], steps: int, batch_size: int, seq_len: int) -> list[Example]:
    """The first examples, as many as the ``packed`` layout fits into ``steps`` batches:
    measuring every layout on these, they all see the same examples (the ``padding`` layout
    then needs more, smaller batches for them). A prefix, not the first rows of packing
    them all: best-fit decreasing fills its first rows with the longest examples."""
    if steps < 1:
        raise DataError(f"steps={steps} must be at least 1 (or None for every example)")
    examples = _tokenized(examples, seq_len)
    lengths = [len(ex["input_ids"]) for ex in examples]
    fit, too_many = 1, len(examples) + 1  # a bisection: one example always fits in a row
    while too_many - fit > 1:
        n = (fit + too_many) // 2
        if len(pack_groups(lengths[:n], seq_len)) <= steps * batch_size:
            fit = n
        else:
            too_many = n
    return examples[:fit]


@dataclass(frozen=True)
class LayoutMeasurement:
    """One layout's cost and loss on a fixed set of examples (:func:`measure_layout`)."""

    layout: str
    examples: int
    batches: int
    real_tokens: int
    supervised_tokens: int
    padding_fraction: float
    seconds: float
    """Forward + backward over every batch, the fastest of the timed passes."""
    tokens_per_second: float
    """Real (non-padding) tokens per second."""
    loss_per_token: float
    """Summed token losses / supervised tokens: the same number for ``padding`` and
    ``packed`` (they compute the same thing), another one for ``naive``."""
    activation_bytes: int
    """Bytes saved for backward by the largest batch (exact, :class:`~ftlab.memory.ActivationMeter`)."""
    activation_tokens: int
    """Real tokens in that largest batch."""
    rows: int = 0
    """Rows the model computes (padded examples, or packed rows)."""
    slots: int = 0
    """Token positions the model computes, padding included."""

    @property
    def activation_bytes_per_token(self) -> float:
        return self.activation_bytes / self.activation_tokens

    @property
    def row_length(self) -> float:
        """Mean length of a computed row: what each token's attention runs over (at most)."""
        return self.slots / self.rows

    @property
    def seconds_per_slot(self) -> float:
        """Seconds per computed token position: what a prediction from the padding alone
        assumes is the same in every layout."""
        return self.seconds / self.slots

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "activation_bytes_per_token": self.activation_bytes_per_token}


def measure_layout(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
                   layout: str, batch_size: int = 8, seq_len: int = 256, steps: int | None = None,
                   repeats: int = 1) -> LayoutMeasurement:
    """Time one layout's training passes and measure its loss and activation memory.

    ``steps`` picks the examples (:func:`first_steps`; None: all of them), so calls for
    different layouts with the same arguments measure the same examples. Each batch runs
    forward and backward and the gradients are dropped: no optimizer step, so the weights
    stay as they are and the layouts' losses compare token for token (the optimizer step
    costs the same whatever the layout). First one untimed pass over the largest batch
    measures the activations and warms up; then ``repeats`` timed passes over every batch,
    of which the fastest counts (other load on the machine only ever slows a pass down).
    To compare layouts, :func:`measure_layouts` interleaves their passes instead.
    """
    if repeats < 1:
        raise DataError(f"repeats={repeats} must be at least 1")
    return measure_layouts(model, tokenizer, examples, (layout,), batch_size, seq_len, steps, rounds=repeats,
                           statistic=min)[0][layout]


def measure_layouts(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
                    layouts: Sequence[str] = LAYOUTS, batch_size: int = 8, seq_len: int = 256,
                    steps: int | None = None, rounds: int = 5,
                    statistic: Callable[[Sequence[float]], float] | None = None) -> tuple[dict[str, LayoutMeasurement], Timings]:
    """Every layout of ``layouts`` measured as :func:`measure_layout` does, with the timed
    passes interleaved (:func:`ftlab.lessons.timing.interleaved`): round after round, one
    pass over every batch of each layout, the order reversed every other round, so that
    load on the machine hits every layout alike. Returns ``({layout: measurement}, timings)``;
    a measurement's ``seconds`` is the median of its rounds (``statistic``), and
    ``timings.ratios(a, b)`` gives the per-round ratios whose spread says whether a
    difference is larger than the load's."""
    if rounds < 1:
        raise DataError(f"rounds={rounds} must be at least 1")
    chosen = first_steps(examples, steps, batch_size, seq_len) if steps is not None else examples
    device = next(model.parameters()).device
    prepared = {}
    for layout in layouts:
        batches = layout_batches(chosen, layout, batch_size, seq_len, tokenizer.pad_token_id)
        for batch in batches:
            batch.inputs.update({k: v.to(device) for k, v in batch.inputs.items()})
        prepared[layout] = batches
    was_training = model.training
    model.train()
    try:
        metered, losses = {}, {}
        for layout, batches in prepared.items():
            largest = max(batches, key=lambda b: b.slots)
            with ActivationMeter(model) as meter:
                loss = _loss(model, largest)
            loss.backward()
            model.zero_grad(set_to_none=True)
            metered[layout] = (meter.bytes, largest.real_tokens)
            with torch.no_grad():
                losses[layout] = sum(_loss(model, b).item() * b.supervised_tokens for b in batches)

        def one_pass(batches: list[Batch]) -> None:
            for batch in batches:
                _loss(model, batch).backward()
                model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        timings = interleaved({layout: (lambda b=batches: one_pass(b)) for layout, batches in prepared.items()},
                              rounds=rounds, warmup=0)
    finally:
        model.train(was_training)
    pick = statistic or (lambda xs: sorted(xs)[len(xs) // 2])
    out = {}
    for layout, batches in prepared.items():
        real = sum(b.real_tokens for b in batches)
        supervised = sum(b.supervised_tokens for b in batches)
        seconds = pick(timings.seconds[layout])
        out[layout] = LayoutMeasurement(
            layout=layout, examples=sum(b.examples for b in batches), batches=len(batches), real_tokens=real,
            supervised_tokens=supervised, padding_fraction=padding_fraction(batches), seconds=seconds,
            tokens_per_second=real / seconds, loss_per_token=losses[layout] / supervised,
            activation_bytes=metered[layout][0], activation_tokens=metered[layout][1],
            rows=sum(b.inputs["input_ids"].shape[0] for b in batches), slots=sum(b.slots for b in batches))
    return out, timings


def predicted_speedup(padded: LayoutMeasurement, packed: LayoutMeasurement) -> float:
    """Real tokens per second of ``packed`` over ``padded`` if every computed slot cost the
    same: the ratio of their shares of real tokens, (1 - packed padding) / (1 - padded padding)."""
    return (1 - packed.padding_fraction) / (1 - padded.padding_fraction)


def row_length_cost(model: torch.nn.Module, lengths: Sequence[int], slots: int, rounds: int = 5) -> Timings:
    """Forward and backward over random tokens in rows of each of ``lengths``, each batch
    holding about ``slots`` positions (``slots // length`` rows), under one plain causal
    mask, interleaved: whether a slot costs more in a longer row. Nothing but the row length
    differs, so ``timings.ratios(f"L={b}", f"L={a}")`` times ``a/b``-adjusted slot counts is
    what the longer rows add per slot (:func:`slot_cost_ratio`)."""
    vocab = model.get_input_embeddings().num_embeddings
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    batches = {}
    for length in lengths:
        rows = max(1, slots // length)
        ids = torch.randint(0, vocab, (rows, length), generator=gen).to(device)
        batches[f"L={length}"] = ids

    def one(ids: torch.Tensor) -> None:
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    was_training = model.training
    model.train()
    try:
        return interleaved({k: (lambda ids=ids: one(ids)) for k, ids in batches.items()}, rounds=rounds, warmup=1)
    finally:
        model.train(was_training)


def slot_cost_ratio(timings: Timings, long: int, short: int, slots: int) -> tuple[float, ...]:
    """Per round: seconds per slot in rows of ``long`` over seconds per slot in rows of
    ``short``, from :func:`row_length_cost` timings of the same ``slots``."""
    per_slot = {n: slots // n * n for n in (long, short)}
    return tuple(r * per_slot[short] / per_slot[long] for r in timings.ratios(f"L={long}", f"L={short}"))


def _loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """transformers' causal-LM loss (mean over the batch's supervised tokens); no KV cache,
    which would hide the packed examples' boundaries."""
    return model(**batch.inputs, use_cache=False).loss


@dataclass(frozen=True)
class Contamination:
    """Example B's loss per supervised token, alone and packed after example A."""

    alone: float
    naive: float
    """A and B in one row under one causal mask: B attends to A."""
    restarted: float
    """A and B in one row with restarted ``position_ids``, as
    :func:`ftlab.setup.data.pack_examples` lays a row out: equal to ``alone`` up to float
    rounding."""
    restarted_with_mask: float
    """The same row plus an all-ones ``attention_mask``: transformers no longer looks for
    the restarts, so B attends to A, with positions that repeat."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def contamination(model: torch.nn.Module, a: Example, b: Example) -> Contamination:
    """How much packing A before B changes B's loss, in each layout (only B is scored).

    Evaluation mode, no gradients: a pure function of the weights, so the differences are
    the layouts' and nothing else's.
    """
    width = len(a["input_ids"]) + len(b["input_ids"])
    a_in, b_in = _tokenized([a, b], width)
    # A then B, written out by hand: the packer would put the longer one first
    ids = torch.tensor([a_in["input_ids"] + b_in["input_ids"]])
    labels = torch.tensor([[-100] * len(a_in["labels"]) + b_in["labels"]])  # score B only
    positions = torch.tensor([list(range(len(a_in["input_ids"]))) + list(range(len(b_in["input_ids"])))])
    was_training = model.training
    model.eval()
    try:
        return Contamination(
            alone=_eval_loss(model, input_ids=torch.tensor([b_in["input_ids"]]), labels=torch.tensor([b_in["labels"]])),
            naive=_eval_loss(model, input_ids=ids, labels=labels),
            restarted=_eval_loss(model, input_ids=ids, labels=labels, position_ids=positions),
            restarted_with_mask=_eval_loss(model, input_ids=ids, labels=labels, position_ids=positions,
                                           attention_mask=torch.ones_like(ids)))
    finally:
        model.train(was_training)


def _eval_loss(model: torch.nn.Module, **inputs: torch.Tensor) -> float:
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(**{k: v.to(device) for k, v in inputs.items()}, use_cache=False).loss.item()
