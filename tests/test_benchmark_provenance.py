"""Every recorded benchmark figure shows its age: each file of benchmarks/results/ records the commit it measured
and the processor it ran on, each script writes them, and benchmarks/README.md shows them beside the figure."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
RESULTS = sorted(p for p in (BENCHMARKS / "results").iterdir() if p.suffix != ".png")  # a figure's provenance is its JSON's
COMMIT = re.compile(r"[0-9a-f]{40}(\+uncommitted changes)?")


def recorded(path: Path) -> dict:
    """A results file's provenance: a JSON file's ``provenance``, a text file's first ``name: value`` lines."""
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))["provenance"]
    head = [line.split(": ", 1) for line in path.read_text(encoding="utf-8").splitlines()[:4]]
    return {name: value.split(" (")[0] for name, value in head}


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_a_results_file_records_its_commit_and_processor_and_the_readme_shows_them(path):
    provenance = recorded(path)
    assert COMMIT.fullmatch(provenance["commit"]) and provenance["cpu"], provenance
    readme = (BENCHMARKS / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"`results/{re.escape(path.name)}`(; | \()commit `{provenance['commit'][:7]}`", readme), (
        f"benchmarks/README.md does not show results/{path.name}'s commit {provenance['commit'][:7]} beside it")


def test_every_benchmark_script_writes_its_results_with_their_provenance():
    scripts = [p for p in BENCHMARKS.glob("*.py") if p.name != "provenance.py"]
    writers = [p for p in scripts if "results" in p.read_text(encoding="utf-8")]
    assert len(writers) >= 6
    for script in writers:
        text = script.read_text(encoding="utf-8")
        assert "from provenance import record" in text and "write_json_atomic" not in text, script.name


def test_record_writes_the_commit_and_the_processor(tmp_path):
    spec = importlib.util.spec_from_file_location("provenance", BENCHMARKS / "provenance.py")
    provenance = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(provenance)
    written = json.loads(provenance.record(tmp_path / "result.json", {"steps_per_s": 4.0}).read_text())
    assert written["steps_per_s"] == 4.0
    assert COMMIT.fullmatch(written["provenance"]["commit"]) or written["provenance"]["commit"] == "not recorded"
    assert written["provenance"]["cpu"] and "recorded" in written["provenance"]
