"""A chapter's prose states only numbers its outputs show, or numbers marked as inputs.

The rule (``ftlab.prose`` has it in full): a number written in a markdown cell is *shown*
when some number in the same notebook's outputs (streams, text/plain, text/markdown,
text/html) rounds to it at the prose's precision, i.e. lies within half a unit of its last
written digit: ``0.77`` is shown by ``0.766``, ``1e-6`` by ``0.000001``, ``22.9%`` by
``22.9`` or by ``0.2292``, ``1.5M`` by ``1,544,128``. Not read as claims: inline code, code
blocks, LaTeX, HTML tags and links, digits inside names (``fp32``, ``SmolLM2-135M``,
``8-bit``), chapter and exercise numbers (``# 02 ·``, ``chapter 05``, ``exercise 1``), list
and ``Step N`` ordinals, citation years (``Hu et al., 2021``) and arXiv ids.

**How to mark an input.** A number the chapter chose rather than measured (a setting, a
paper's worked example, a constant of a method) is wrapped in the markdown as

    a learning rate of <span class="input">2e-5</span>

Markdown renders an inline ``<span>`` as its plain text, so readers (JupyterLab, GitHub,
nbviewer) see ``a learning rate of 2e-5`` and nothing else; everything inside the span is
exempt from the check. Prefer pointing at the output ("the cell below prints ...") to
typing a measured number: then nothing can go stale.
"""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from prose import is_shown, output_text, prose_numbers, unsupported_numbers

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb")) + sorted(
    (Path(__file__).parent.parent / "notebooks").glob("solutions/*.ipynb"))  # the worked answers are read on GitHub too


def _notebook(markdown: str, *outputs: str) -> dict[str, Any]:
    """A markdown cell, then a code cell whose stdout prints each of ``outputs``."""
    return {"cells": [{"cell_type": "markdown", "metadata": {}, "source": markdown.splitlines(keepends=True)},
                      {"cell_type": "code", "metadata": {}, "source": ["print(...)"], "execution_count": 1,
                       "outputs": [{"output_type": "stream", "name": "stdout", "text": [o + "\n"]} for o in outputs]}]}


def _texts(markdown: str) -> list[str]:
    return [n.text for n in prose_numbers(markdown)]


# --- the check on small synthetic notebooks ---------------------------------------------------

def test_a_number_present_in_an_output_passes() -> None:
    nb = _notebook("The eval loss fell to 0.796 and exact match rose to 22.9%.",
                   "eval loss 0.796, exact match 22.9%")
    assert unsupported_numbers(nb) == []


def test_a_number_absent_from_every_output_fails_with_its_cell_and_line() -> None:
    nb = _notebook("# 00 · Tour\n\nAbout 350 examples are cut.", "3000 examples, 71 tokens on average")
    [found] = unsupported_numbers(nb)
    assert (found.text, found.cell, found.context) == ("350", 0, "About 350 examples are cut.")
    assert str(found) == "cell 0: '350' in 'About 350 examples are cut.'"


def test_a_number_marked_as_input_passes() -> None:
    nb = _notebook('Full fine-tuning takes a small rate (<span class="input">2e-5</span>).', "loss 1.19")
    assert unsupported_numbers(nb) == []
    assert unsupported_numbers(_notebook("Full fine-tuning takes a small rate (2e-5).", "loss 1.19"))


def test_only_outputs_count_not_code_and_not_other_notebooks() -> None:
    nb = _notebook("We train for 80 steps.")
    nb["cells"][1]["source"] = ["max_steps = 80"]
    assert [n.text for n in unsupported_numbers(nb)] == ["80"]


@pytest.mark.parametrize("mime", ["text/plain", "text/markdown", "text/html"])
def test_rich_outputs_count(mime: str) -> None:
    nb = _notebook("It needed 948 MiB.")
    text = "<td>947.93</td>" if mime == "text/html" else "total 947.93 MiB"
    nb["cells"][1]["outputs"] = [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                                  "data": {mime: [text]}}]
    assert unsupported_numbers(nb) == []


# --- the equivalence rule --------------------------------------------------------------------

@pytest.mark.parametrize("prose, output", [
    ("0.77", "final loss 0.766"),           # prose rounds the output
    ("0.77", "0.7749"),
    ("513 MiB", "weights 513.1 MiB"),
    ("1e-6", "lr 0.000001"),                # scientific and plain notation
    ("0.000001", "lr 1e-06"),
    ("2e-5", '"learning_rate": 2e-05'),
    ("1e-3", '"learning_rate": 0.001'),
    ("22.9%", "exact match 22.9"),          # a percentage and its number
    ("22.9%", "exact_match=0.2292"),        # ... or its fraction
    ("10%", '"warmup_steps": 0.1'),
    ("3,000", "total: 3000"),               # thousands separators
    ("921,600", "921,600 of 135,436,608"),
    ("1.5M", "parameters 1,544,128"),       # a scale letter
    ("135M", "134515008 parameters"),
    ("135M", "SmolLM2 has 134.5M parameters"),
    ("20%", "expected '-20.00%'"),           # signs are ignored
    ("13.6x", "step time (13.6x)"),
    ("2.13.0", "torch 2.13.0+cpu"),         # a version: verbatim
])
def test_shown(prose: str, output: str) -> None:
    [number] = prose_numbers(f"It was {prose} here.")
    assert is_shown(number, output), (prose, output)


@pytest.mark.parametrize("prose, output", [
    ("22.9%", "exact match 23%"),           # the output is coarser than the claim
    ("0.77", "0.78"),
    ("1e-6", "lr 1e-05"),
    ("350", "cut: 349"),
    ("1.5M", "parameters 1,400,000"),
    ("2.13.0", "torch 2.13.1"),
    ("4 bits", "4.6 bits per weight"),
    ("4 bits", "3.4 bits per weight"),
])
def test_not_shown(prose: str, output: str) -> None:
    [number] = prose_numbers(f"It was {prose} here.")
    assert not is_shown(number, output), (prose, output)


# --- what is read as a claim -----------------------------------------------------------------

@pytest.mark.parametrize("markdown", [
    "# 02 · Learning rate",                                      # chapter number in a heading
    "as chapter 05 shows; chapters 02-05 and chapter 3",         # chapter references
    "### 2. Checkpointing\nas in exercise 1 and Exercises 2-3",   # exercise numbers
    "1. the device\n2. the model\n  10) the data",               # list ordinals
    "**1.** Predict, then run\n*2.* and __3)__ too",             # exercise ordinals
    "**Step 2:** load the model",
    "an update `w ← w·(1 − 0.1)` in code",                      # inline code
    "```python\nmax_steps = 80\n```",                            # fenced code
    "the rule $\\tau = 1/(\\eta\\lambda)$ and $$\\alpha/\\sqrt{Ld} = 5$$",  # LaTeX
    "NEFTune (Jain et al., 2023); Hu et al. (2021); Dettmers (2023); Bergsma and Smith, 2025",
    "QLoRA, arXiv:2305.14314, [paper](https://arxiv.org/abs/2106.09685)",
    "fp32 and bf16, SmolLM2-135M, Qwen2.5-0.5B, Llama-3-8B, AVX512-BF16, NF4, the 2nd run",
    "8-bit AdamW, a 4-bit base, 32-bit floats",
    '<img src="x.png" width="600"> <!-- 42 -->',
    'a <span class="input">block of 64</span> and <span class=\'input\'>150</span> steps',
])
def test_not_claims(markdown: str) -> None:
    assert _texts(markdown) == []


def test_claims_are_read_with_their_form() -> None:
    markdown = ("About 350 of 3,000 examples (11.7%) are cut at 4x64 tokens; a 1.5M-parameter model, "
                "rates from 1e-7 to 2.5e-5, 13.6x slower, in 2024 (a year with no author is a claim), 5-10 steps.")
    assert _texts(markdown) == ["350", "3,000", "11.7%", "4", "64", "1.5M", "1e-7", "2.5e-5", "13.6x", "2024", "5",
                                "10"]
    values = {n.text: (n.value, n.tolerance) for n in prose_numbers(markdown)}
    assert values["1.5M"] == (Decimal("1.5E+6"), Decimal("5E+4"))
    assert values["2.5e-5"] == (Decimal("2.5E-5"), Decimal("5E-7"))
    assert values["3,000"] == (Decimal(3000), Decimal("0.5"))


def test_html_outputs_are_read_without_their_tags() -> None:
    nb = _notebook("x")
    nb["cells"][1]["outputs"] = [{"output_type": "display_data", "metadata": {},
                                  "data": {"text/html": "<td width=\"600\">0.5&nbsp;MiB</td>"}}]
    assert "600" not in output_text(nb) and "0.5" in output_text(nb)


# --- the committed chapters ------------------------------------------------------------------

def test_there_are_notebooks_to_check() -> None:
    assert len(NOTEBOOKS) >= 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_prose_states_only_numbers_its_outputs_show(path: Path) -> None:
    found = unsupported_numbers(json.loads(path.read_text(encoding="utf-8")))
    assert not found, (f"{path.name}: {len(found)} numbers in the prose that no output shows; point the prose at "
                       f"the output, fix it, or mark a chosen value as <span class=\"input\">...</span>:\n"
                       + "\n".join(map(str, found)))
