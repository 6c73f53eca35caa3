"""Did a tiny-base verdict hold on SmolLM2-135M? Read from the transfer benchmark's results.

Why: a knob chapter draws its verdicts on a 1.5M-parameter byte-level base, and its takeaway
says what a learner may carry to a real fine-tune. ``benchmarks/transfer_smollm2.py`` runs
the same studies with the same protocol on LoRA over SmolLM2-135M and commits the results;
this module turns them into the rows a takeaway shows, so "transfers" is read from a
measurement, never typed by hand.

"Held" compares verdicts, not numbers: the two bases' losses are in different units (nats
per byte, nats per token), so only the direction and the verdict can carry.

* an effect on both bases, the same way: **yes**; opposite ways: **no**;
* an effect on the tiny base that SmolLM2 could not tell at its budget: **can't tell**;
* no effect the tiny base could tell, and an effect on SmolLM2: **no**;
* neither could tell: **yes: can't tell on both** (the null carried, at both budgets).

The chosen rates compare by their order: whether an arm's best rate sits above, at or below
the baseline's on both bases.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlab.foundation.storage import data_dir

RESULTS = Path("benchmarks") / "results" / "transfer_smollm2.json"
"""The results file, relative to the repository (the folder above the shipped ``data/``)."""

METRICS = {"test_loss": "test loss", "test_token_accuracy": "answer-token accuracy"}
"""The verdicts a takeaway carries, with their names in the table."""


@dataclass(frozen=True)
class Held:
    """One carried verdict: what the tiny base said, what SmolLM2 said, and whether it held."""

    carried: str
    tiny: str
    smollm2: str
    held: str
    instead: str = ""
    """What to carry where the verdict did not hold (empty where it held)."""


def results_path() -> Path:
    """The committed results file of ``benchmarks/transfer_smollm2.py``."""
    return data_dir().resolve().parent / RESULTS


def held_verdict(tiny: dict[str, Any], smollm2: dict[str, Any]) -> str:
    """Whether a verdict (a results entry: ``difference``, ``effect``) held on SmolLM2."""
    if tiny["effect"] and smollm2["effect"]:
        return "yes" if (tiny["difference"] > 0) == (smollm2["difference"] > 0) else "no"
    if tiny["effect"]:
        return "can't tell"
    return "no" if smollm2["effect"] else "yes: can't tell on both"


def held_order(tiny: float, smollm2: float) -> str:
    """Whether a ratio of chosen rates (arm over baseline) sits on the same side of 1 on both bases."""
    side = lambda ratio: (ratio > 1) - (ratio < 1)
    return "yes" if side(tiny) == side(smollm2) else "no"


def _unit(slot: dict[str, Any], key: str) -> str:
    """A verdict's unit: the base's loss unit (nats per byte or per token), or accuracy."""
    return "accuracy" if key == "test_token_accuracy" else slot["unit"]


def _verdict_text(v: dict[str, Any], unit: str) -> str:
    return f"{v['difference']:+.3f} {unit} [{v['low']:+.3f}, {v['high']:+.3f}], {v['verdict']}"


def transfer_rows(study: str, path: str | Path | None = None) -> list[Held]:
    """The rows of ``study`` (``schedule``, ``batch`` or ``lora``): each arm's verdicts on the
    test loss and the answer-token accuracy, then the order of the chosen rates. Raises
    FileNotFoundError naming the command that writes the file, KeyError for a study it lacks."""
    file = Path(path) if path is not None else results_path()
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no transfer results; run python benchmarks/transfer_smollm2.py --study {study}")
    entry = json.loads(file.read_text(encoding="utf-8"))["studies"][study]
    tiny, smol = entry["tiny"], entry["smollm2"]
    if not (tiny and smol and tiny.get("verdicts") and smol.get("verdicts")):
        raise KeyError(f"{file}: study {study!r} has no verdicts on both bases; run python "
                       f"benchmarks/transfer_smollm2.py --study {study} --base both")
    rows: list[Held] = []
    # arms pair by position: a budget scaled to SmolLM2's cost renames them ("batch 4, 64 steps" for 256)
    pairs = list(zip(tiny["arms"], smol["arms"]))
    named = lambda t_arm, s_arm, text: text if t_arm == s_arm else f"{s_arm}: {text}"
    baseline, s_baseline = pairs[0]
    for key, name in METRICS.items():
        for arm, s_arm in pairs[1:]:
            t, s = tiny["verdicts"][key][arm], smol["verdicts"][key][s_arm]
            held = held_verdict(t, s)
            instead = "" if held.startswith("yes") else (
                f"{arm} against {baseline}, {name}: carry SmolLM2's reading ({s['verdict']}, "
                f"{s['difference']:+.3f} {_unit(smol, key)}), measured on the real model, not the tiny base's")
            rows.append(Held(f"{arm} minus {baseline}, {name}", _verdict_text(t, _unit(tiny, key)),
                             named(arm, s_arm, _verdict_text(s, _unit(smol, key))), held, instead))
    rate = lambda slot, arm: slot["arms"][arm]["chosen_rate"]
    for arm, s_arm in pairs[1:]:
        ratios = [rate(tiny, arm) / rate(tiny, baseline), rate(smol, s_arm) / rate(smol, s_baseline)]
        held = held_order(*ratios)
        texts = [f"{a} {rate(slot, a):g}, {b} {rate(slot, b):g} ({r:.2g}x)"
                 for slot, a, b, r in ((tiny, arm, baseline, ratios[0]), (smol, s_arm, s_baseline, ratios[1]))]
        instead = "" if held == "yes" else (f"the order of {arm}'s and {baseline}'s best rates: sweep each arm's rate on "
                                            "the model you tune; neither base's order carries")
        rows.append(Held(f"best rate, {arm} against {baseline}", texts[0], texts[1], held, instead))
    return rows


def budgets(study: str, path: str | Path | None = None) -> str:
    """Each base's budget and precision in words, and the arms whose curves were still moving."""
    file = Path(path) if path is not None else results_path()
    entry = json.loads(file.read_text(encoding="utf-8"))["studies"][study]
    parts = []
    for base, name in (("tiny", "tiny base"), ("smollm2", "SmolLM2-135M LoRA")):
        slot = entry[base]
        moving = [arm for arm, a in slot["arms"].items() if a.get("flat") is False]
        parts.append(f"{name}: {slot['budget_text']}, {slot['precision']}"
                     + (f", still moving: {', '.join(moving)}" if moving else ""))
    return "; ".join(parts)
