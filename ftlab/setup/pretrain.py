"""Pretraining the ``tiny-pretrained`` base: the knob chapters' laptop model.

A learner's real fine-tune starts from a model that already reads its domain; a randomly
initialised model does not, and knobs behave differently on it (NEFTune's noise, for
example, is several times the size of untrained embeddings). SmolLM2-135M is too slow to
fine-tune five times per chapter on two CPU cores, so the knob chapters fine-tune a small
byte-level Llama that this module pretrains first, in about two minutes, on a corpus it
writes itself:

* the corpus is plain prose about money (ledger lines, exchange notes, discounts,
  interest, price moves, dates restated in ISO form), every figure computed exactly with
  ``decimal``. It is never in question/answer form, it uses its own company and item
  names, and its own seed, so it shares no example with the fine-tuning splits (a test
  checks that no fine-tuning prompt or invoice line appears in it);
* every other document is a two-turn chat transcript in ChatML (two sentences of prose,
  not a question and its answer), so the base knows the turn tokens, as a chat-pretrained
  model does;
* documents are joined with the end-of-text token and cut into rows of
  ``SEQ_LEN`` bytes, as pretraining usually packs text;
* the loop is plain PyTorch (AdamW, warmup then cosine), seeded, so every machine builds
  the same model up to floating-point summation order.

What transfers to a 135M or 7B model: the base knows the domain's words and number
formats but not the instruction format, so fine-tuning has something real to adapt, and
schedules, weight decay, NEFTune and accumulation act on trained weights and embeddings.
What does not: the base has no general language knowledge, reads bytes, and has 1.5M
parameters, so absolute losses, speeds and the best learning rate are its own.
"""
from __future__ import annotations

import math
import random
import time
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable, Iterator

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_scheduler

SEED = 7
SEQ_LEN = 128
BATCH = 16
STEPS = 300
LEARNING_RATE = 3e-3
WARMUP = 40
DOCUMENTS = 12000

_CENT = Decimal("0.01")
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
# Names of its own: the fine-tuning data uses others, so no invoice line can repeat.
_COMPANIES = ["Alder Bank", "Birch Traders", "Cobalt Mills", "Delta Freight", "Elm Street Bakery", "Fjord Energy",
              "Granite Works", "Harbor Textiles", "Iris Pharma", "Juniper Farms", "Kestrel Air", "Lumen Studios"]
_ITEMS = ["steel bolts", "flour sacks", "diesel", "office rent", "legal advice", "solar panels", "bike parts",
          "wool yarn", "seed potatoes", "web design", "insurance", "bus tickets"]
_CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD"]


def _money(x: Decimal) -> str:
    return str(x.quantize(_CENT, rounding=ROUND_HALF_UP))


def _amount(rng: random.Random, low: int, high: int) -> Decimal:
    return Decimal(rng.randint(low, high)) + Decimal(rng.randint(0, 99)) / 100


def _date(rng: random.Random) -> tuple[str, str]:
    """A date in one of four spellings, and its ISO form."""
    y, m, d = rng.randint(2015, 2026), rng.randint(1, 12), rng.randint(1, 28)
    iso = f"{y}-{m:02d}-{d:02d}"
    spelled = rng.choice([iso, f"{d} {_MONTHS[m - 1][:3]} {y}", f"{m:02d}/{d:02d}/{y}", f"{_MONTHS[m - 1]} {d}, {y}"])
    return spelled, iso


def _ledger(rng: random.Random) -> str:
    spelled, _ = _date(rng)
    total = _amount(rng, 10, 40000)
    cur = rng.choice(_CURRENCIES[:3])
    return (f"On {spelled} {rng.choice(_COMPANIES)} paid {total:,.2f} {cur} for {rng.randint(1, 60)} x "
            f"{rng.choice(_ITEMS)}, reference {rng.choice('ABCDEFGH')}{rng.randint(100, 99999)}. "
            f"The amount without separators is {_money(total)}.")


def _exchange(rng: random.Random) -> str:
    a, b = rng.sample(_CURRENCIES, 2)
    rate = Decimal(rng.randint(20, 20000)) / 100
    units = _amount(rng, 1, 5000)
    return f"At {rate} {b} per {a}, {_money(units)} {a} came to {_money(units * rate)} {b}."


def _discount(rng: random.Random) -> str:
    price, pct = _amount(rng, 5, 3000), rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 60, 70])
    return (f"The {rng.choice(_ITEMS)} were marked {_money(price)}; with {pct}% off they sold for "
            f"{_money(price * (100 - pct) / 100)}.")


def _interest(rng: random.Random) -> str:
    principal, rate, years = Decimal(rng.randint(2, 400) * 50), rng.randint(1, 12), rng.randint(1, 15)
    simple = principal * rate * years / 100
    compound = principal * (1 + Decimal(rate) / 100) ** years
    return (f"{_money(principal)} lent at {rate}% a year for {years} years earns {_money(simple)} of simple "
            f"interest; compounded yearly it grows to {_money(compound)}.")


def _price_move(rng: random.Random) -> str:
    old = Decimal(rng.randint(10, 900))
    new = _amount(rng, 5, 1200)
    change = (new - old) / old * 100
    return f"{rng.choice(_COMPANIES)} shares moved from {_money(old)} to {_money(new)}, a change of {_money(change)}%."


def _iso(rng: random.Random) -> str:
    spelled, iso = _date(rng)
    return f"The date {spelled} is written {iso} in ISO form."


_KINDS: tuple[Callable[[random.Random], str], ...] = (_ledger, _exchange, _discount, _interest, _price_move, _iso)


def corpus(documents: int = DOCUMENTS, seed: int = SEED) -> list[str | list[dict[str, str]]]:
    """The pretraining documents: one to three sentences of money prose each.

    Every other document is a two-turn chat transcript (one speaker's sentence, then the
    other's), as chat models see in pretraining: the base learns what the ChatML turn
    tokens mean, never a question followed by its answer.
    """
    rng = random.Random(seed)
    docs: list[str | list[dict[str, str]]] = []
    for i in range(documents):
        sentences = [rng.choice(_KINDS)(rng) for _ in range(rng.randint(1, 3) if i % 2 else 2)]
        if i % 2:
            docs.append(" ".join(sentences))
        else:
            docs.append([{"role": "user", "content": sentences[0]}, {"role": "assistant", "content": sentences[1]}])
    return docs


def document_text(doc: str | list[dict[str, str]], tokenizer: PreTrainedTokenizerBase) -> str:
    """A document as the text the model reads: prose as is, a chat through the chat template."""
    return doc if isinstance(doc, str) else tokenizer.apply_chat_template(doc, tokenize=False)


def packed_rows(docs: list[str | list[dict[str, str]]], tokenizer: PreTrainedTokenizerBase,
                seq_len: int = SEQ_LEN) -> torch.Tensor:
    """All documents as one token stream, each followed by the end-of-text token, cut into
    rows of ``seq_len`` (the tail that does not fill a row is dropped)."""
    stream: list[int] = []
    for doc in docs:
        stream.extend(tokenizer(document_text(doc, tokenizer), add_special_tokens=False)["input_ids"])
        stream.append(tokenizer.eos_token_id)
    rows = len(stream) // seq_len
    return torch.tensor(stream[: rows * seq_len]).view(rows, seq_len)


def _batches(rows: torch.Tensor, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        for idx in torch.randperm(len(rows), generator=generator).split(batch):
            if len(idx) == batch:
                yield rows[idx]


def pretrain(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, steps: int = STEPS,
             documents: int = DOCUMENTS, seed: int = SEED) -> dict[str, Any]:
    """Train ``model`` in place on the corpus as a causal LM; return what the run did
    (written beside the weights, so a learner can see how the base was made)."""
    torch.manual_seed(seed)
    rows = packed_rows(corpus(documents, seed), tokenizer)
    held_out, rows = rows[:BATCH], rows[BATCH:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    schedule = get_scheduler("cosine", optimizer, num_warmup_steps=WARMUP, num_training_steps=steps)
    batches = _batches(rows, BATCH, torch.Generator().manual_seed(seed))
    model.train()
    started, losses = time.perf_counter(), []
    for _ in range(steps):
        ids = next(batches)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        held_out_loss = model(input_ids=held_out, labels=held_out).loss.item()
    return {"steps": steps, "batch": BATCH, "seq_len": SEQ_LEN, "learning_rate": LEARNING_RATE, "seed": seed,
            "documents": documents, "corpus_tokens": int(rows.numel()), "tokens_seen": steps * BATCH * SEQ_LEN,
            "first_loss": losses[0], "final_loss": sum(losses[-20:]) / min(20, len(losses)),
            "held_out_loss": held_out_loss, "uniform_loss": math.log(len(tokenizer)),
            "seconds": time.perf_counter() - started}
