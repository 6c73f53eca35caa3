"""benchmarks/reproduce.py reads every verdict line of a chapter and calls a reproduction
failed only when an effect flips sign."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
reproduce = pytest.importorskip("reproduce")


def _chapter(tmp_path: Path, name: str, text: str) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(rep.lines())")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    nb.cells = [cell]
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


LINES = ("Verdicts against 'base' (at 8 epochs of 128 examples, ...):\n"
         "  λ=0.1 [test_loss]: −0.031 nats per byte [−0.050, −0.012], 95% interval, 3 paired seeds: an effect (b is lower)\n"
         "  λ=0.1 [test_token_accuracy]: +0.004 accuracy [−0.010, +0.018], 95% interval, 3 paired seeds: "
         "can't tell at this budget (smallest detectable difference ≈ 0.020)\n")


def test_every_verdict_line_is_read_with_its_sign_and_verdict(tmp_path):
    found = reproduce.verdicts(_chapter(tmp_path, "a.ipynb", LINES))
    assert found == {"λ=0.1 [test_loss]": {"difference": -0.031, "effect": True},
                     "λ=0.1 [test_token_accuracy]": {"difference": 0.004, "effect": False}}


def test_only_an_effect_that_flips_sign_fails_the_reproduction(tmp_path):
    committed = reproduce.verdicts(_chapter(tmp_path, "a.ipynb", LINES))
    flipped = reproduce.verdicts(_chapter(tmp_path, "b.ipynb", LINES.replace("−0.031", "+0.031")))
    weaker = reproduce.verdicts(_chapter(tmp_path, "c.ipynb", LINES.replace(": an effect (b is lower)", ": can't tell")))
    outcomes = lambda rows: [r["outcome"] for r in rows]  # noqa: E731
    assert outcomes(reproduce.compared(committed, committed)) == ["same verdict", "same verdict"]
    assert outcomes(reproduce.compared(committed, flipped)) == ["effect flipped sign", "same verdict"]
    assert outcomes(reproduce.compared(committed, weaker)) == ["effect <-> can't tell", "same verdict"]
    assert outcomes(reproduce.compared(committed, {})) == ["missing", "missing"]
