"""Does a committed chapter's verdict reproduce under another CPU's kernels?

The tiny base ships with the workbook, so two machines fine-tune the same weights and their
numbers differ only by kernel numerics: the vector width of PyTorch's own kernels, the BLAS
and oneDNN code paths, the order of floating-point sums. A learner's laptop takes another
path than the machine that executed the committed chapter, and one seed's loss moves a
little. What must reproduce is the verdict, not the number.

This script re-executes one committed chapter in the ``cpu`` profile, from an empty run
cache, with every kernel family held to another instruction set than this CPU's best
(``--isa avx2`` on an AVX-512 host: ``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``,
``DNNL_MAX_CPU_ISA``), the kernels an AVX2-only CPU runs. It then reads every verdict line
(``arm [metric]: difference … an effect | can't tell``) of the committed and the
re-executed outputs and compares them: a reproduction fails when an effect flips sign.

    python benchmarks/reproduce.py --chapter 06b            # writes results/reproduce_06b.json

A benchmark, not a test: it takes as long as the chapter, with nothing else running.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

from chapters import NOTEBOOKS, ROOT, run_chapter  # benchmarks/chapters.py
from provenance import record  # benchmarks/provenance.py: the commit and processor measured

ISAS: dict[str, dict[str, str]] = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "DNNL_MAX_CPU_ISA": "SSE41"},
}
"""Environment that holds PyTorch's kernels, MKL and oneDNN to one instruction set."""

VERDICT = re.compile(r"^\s*(?P<arm>.+?) \[(?P<key>test_\w+)\]: (?P<difference>[+−-]\d+\.\d+) .*?: "
                     r"(?P<verdict>an effect|can't tell)", re.M)


def verdicts(path: Path) -> dict[str, dict[str, object]]:
    """Every verdict line in a notebook's outputs: ``{"arm [metric]": {difference, effect}}``."""
    nb = nbformat.read(path, as_version=4)
    text = "\n".join("".join(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    return {f"{m['arm']} [{m['key']}]": {"difference": float(m["difference"].replace("−", "-")),
                                         "effect": m["verdict"] == "an effect"}
            for m in VERDICT.finditer(text)}


def compared(committed: dict[str, dict[str, object]], again: dict[str, dict[str, object]]) -> list[dict[str, object]]:
    """One row per verdict of the committed chapter: both differences, both verdicts, and
    whether an effect flipped sign (the failure) or changed to "can't tell" (a weaker one)."""
    rows = []
    for name, first in committed.items():
        second = again.get(name)
        row: dict[str, object] = {"verdict": name, "committed": first, "reproduced": second}
        if second is None:
            row["outcome"] = "missing"
        elif first["effect"] and second["effect"] and (first["difference"] > 0) != (second["difference"] > 0):
            row["outcome"] = "effect flipped sign"
        elif first["effect"] != second["effect"]:
            row["outcome"] = "effect <-> can't tell"
        else:
            row["outcome"] = "same verdict"
        rows.append(row)
    return rows


def capability(env: dict[str, str]) -> str:
    """The vector instruction set PyTorch's kernels use under ``env`` (asked in a fresh process)."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapter", required=True, help="chapter number as in the file name, e.g. 06b")
    parser.add_argument("--isa", choices=sorted(ISAS), default="avx2")
    args = parser.parse_args()
    (notebook,) = NOTEBOOKS.glob(f"{args.chapter}_*.ipynb")
    env = ISAS[args.isa]
    out = ROOT / "out" / "reproduce"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ftlab-runs-") as runs:
        seconds = run_chapter(notebook, out / notebook.name, "cpu", runs, extra_env=env)
    committed = nbformat.read(notebook, as_version=4).metadata.get("ftlab", {}).get("executed", {})
    rows = compared(verdicts(notebook), verdicts(out / notebook.name))
    result = {"chapter": notebook.stem, "committed_on": committed, "kernels_here": capability({}),
              "kernels_reproduced": capability(env), "environment": env, "minutes": round(seconds / 60, 2),
              "verdicts": rows, "flipped": sum(r["outcome"] == "effect flipped sign" for r in rows)}
    for row in rows:
        print(f"{row['verdict']}: {row['outcome']}  ({row['committed']} -> {row['reproduced']})")
    record(ROOT / "benchmarks" / "results" / f"reproduce_{args.chapter}.json", result)


if __name__ == "__main__":
    main()
