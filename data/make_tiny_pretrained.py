"""Rewrite the shipped ``tiny-pretrained`` base with ftlab's pretraining recipe.

    python data/make_tiny_pretrained.py             # rewrites data/tiny-pretrained-v<N>/
    python data/make_tiny_pretrained.py --out DIR   # writes the folder into DIR instead

About two minutes on two cores. The result matches the shipped files up to floating-point
summation order (another CPU or BLAS gives weights that differ in the last bits), so commit
a rewrite only with a new recipe, and bump ``PRETRAIN_VERSION`` when the recipe changes.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from ftlab.setup.presets import build_tiny_pretrained, shipped_tiny_pretrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=shipped_tiny_pretrained(), help="the folder to write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_pretrained(Path(tmp))
        shutil.rmtree(args.out, ignore_errors=True)
        shutil.copytree(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
