"""Committed notebooks read well before anything runs (GitHub, nbviewer, untrusted JupyterLab).

Those readers see the saved outputs only: no widget can run there, so a library's progress
bar is saved as its first frame (``Map:   0%|          | 0/3000``), a widget without a
static fallback as ipywidgets' ``VBox(children=(...`` repr, and a cell that failed as a
traceback. ``problems`` names each such output; the test over ``notebooks/`` fails on any.
The last tests check what ftlab itself writes into a notebook: a real kernel running a
small notebook saves none of it, and training prints two plain lines.
"""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from ftlab import Run, RunConfig
from ftlab.training.step import Recorder
from ftlab.training.train import _summarize

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb")) + sorted(
    (Path(__file__).parent.parent / "notebooks").glob("solutions/*.ipynb"))  # the worked answers are read on GitHub too

PROGRESS_BAR = re.compile(r"\d+%\||\w+/s\]")
"""tqdm's marks: ``42%|`` and the rate in brackets (``3.1it/s]``, ``? examples/s]``)."""


def _text(value: str | list[str]) -> str:
    """nbformat stores multi-line text as a string or a list of lines."""
    return value if isinstance(value, str) else "".join(value)


def _output_problems(output: dict[str, Any]) -> list[str]:
    kind = output.get("output_type")
    if kind == "error":
        return [f"error output: {output.get('ename')}: {output.get('evalue')}"]
    if kind == "stream":
        text = _text(output.get("text", ""))
        found = []
        if output.get("name") == "stderr" and "Traceback" in text:
            found.append("traceback on stderr")
        if "\r" in text:
            found.append("carriage return in a stream (a redrawn progress line)")
        found += [f"progress bar: {line.strip()[:80]!r}" for line in text.splitlines() if PROGRESS_BAR.search(line)]
        return found
    data = output.get("data", {})
    plain = _text(data.get("text/plain", ""))
    if PROGRESS_BAR.search(plain):
        return [f"progress bar: {plain.strip()[:80]!r}"]
    if "children=(" in plain and "image/png" not in data:
        return [f"widget without a static picture: {plain.strip()[:80]!r}"]
    return []


def problems(nb: dict[str, Any]) -> list[str]:
    """What a reader of the saved notebook ``nb`` (its JSON) would see go wrong, one line each
    ('cell 4: progress bar: ...'), counting code cells from 0 as they stand in the file."""
    found = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        found += [f"cell {i}: {problem}" for output in cell.get("outputs", []) for problem in _output_problems(output)]
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_outputs_read_well(path: Path) -> None:
    found = problems(json.loads(path.read_text(encoding="utf-8")))
    assert not found, f"{path.name}: {len(found)} outputs a reader should not see:\n" + "\n".join(found)


def test_there_are_notebooks_to_check() -> None:
    assert len(NOTEBOOKS) >= 9


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebooks_pin_no_profile(path: Path) -> None:
    """A papermill-injected ``PROFILE = "cpu"`` cell left in a committed chapter would make
    nbval in CI (``FTLAB_PROFILE=ci``) train the laptop workload: the chapter's own
    parameters cell must be the only one, with ``PROFILE = None``."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    injected = [i for i, c in enumerate(cells) if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert not injected, f"{path.name}: cell {injected} holds papermill's injected parameters; strip it"
    parameters = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(parameters) == 1 and "PROFILE = None" in "".join(parameters[0]["source"])


MACHINE_PATHS = ("/root/", "/work/", "/tmp/", "/home/")
"""Folders of the machine a chapter was executed on, which mean nothing to a reader."""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_metadata_names_no_machine_folder(path: Path) -> None:
    metadata = json.dumps(json.loads(path.read_text(encoding="utf-8"))["metadata"])
    found = [folder for folder in MACHINE_PATHS if folder in metadata]
    assert not found, f"{path.name}: its metadata names {found} (papermill's input_path/output_path?)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_outputs_name_no_machine_folder(path: Path) -> None:
    """A warning printed with its file (``/work/.../ftlab/experiments/sweep.py:40: UserWarning``) or a
    cache folder in a printed path tells a reader about the machine that ran the chapter."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    def text(output: dict[str, Any]) -> str:  # pictures are base64, where any five characters may turn up
        data = {k: v for k, v in output.get("data", {}).items() if k.startswith("text/")}
        return json.dumps([output.get("text", ""), data, output.get("evalue", ""), output.get("traceback", [])])
    found = [(i, folder) for i, c in enumerate(cells) for o in c.get("outputs", []) for folder in MACHINE_PATHS
             if folder in text(o)]
    assert not found, f"{path.name}: outputs name machine folders (cell, folder): {found}"


# --- order, widget state and pictures, as a reader finds them ------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_execution_counts_run_in_order(path: Path) -> None:
    """A chapter executed top to bottom numbers its cells 1, 2, 3...: a count out of order
    means a cell was run again by hand, and its output may not follow from the ones above."""
    counts = [c.get("execution_count") for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
              if c["cell_type"] == "code"]
    run = [n for n in counts if n is not None]
    assert run == sorted(set(run)), f"{path.name}: execution counts {run}"


WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def orphan_widget_models(nb: dict[str, Any]) -> set[str]:
    """Widget models saved in the notebook's metadata that no displayed widget uses, directly
    or through another model (a leftover progress bar's state): they weigh in the file and,
    trusted, describe something nowhere on the page."""
    state = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    stack = [o["data"][WIDGET_VIEW]["model_id"] for c in nb.get("cells", []) for o in c.get("outputs", [])
             if WIDGET_VIEW in o.get("data", {})]
    reached: set[str] = set()
    while stack:
        model = stack.pop()
        if model in reached or model not in state:
            continue
        reached.add(model)
        stack += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[model]))
    return set(state) - reached


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_saved_widget_state_is_only_for_widgets_on_show(path: Path) -> None:
    orphans = orphan_widget_models(json.loads(path.read_text(encoding="utf-8")))
    assert not orphans, f"{path.name}: {len(orphans)} saved widget models belong to no displayed widget"


def test_a_leftover_progress_bar_model_is_an_orphan() -> None:
    view = {"output_type": "display_data", "metadata": {}, "data": {WIDGET_VIEW: {"model_id": "aa", "version_major": 2}}}
    state = {"aa": {"state": {"layout": "IPY_MODEL_bb"}}, "bb": {"state": {}}, "cc": {"state": {"children": ["IPY_MODEL_dd"]}},
             "dd": {"state": {}}}
    nb = {"metadata": {"widgets": {WIDGET_STATE: {"state": state}}}, "cells": [{"cell_type": "code", "outputs": [view]}]}
    assert orphan_widget_models(nb) == {"cc", "dd"}


def _pictures(cell: dict[str, Any]) -> list[str]:
    return [o["data"]["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_cell_shows_the_same_picture_twice(path: Path) -> None:
    """A figure pyplot keeps open is shown once by pyplot and once as the cell's result."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    twice = [i for i, c in enumerate(cells) if len(set(_pictures(c))) < len(_pictures(c))]
    assert not twice, f"{path.name}: cells {twice} show one picture twice"


GGPLOT_GREY = (229, 229, 229)
"""The axes background of matplotlib's ggplot style, which Optuna's matplotlib plots switch
pyplot to (``plt.style.use("ggplot")``) for every figure drawn after them."""


def ggplot_styled(png: str) -> bool:
    """Whether a saved picture has ggplot's grey axes background (more than a tenth of its pixels)."""
    import io
    import numpy as np
    from matplotlib import image
    pixels = (image.imread(io.BytesIO(base64.b64decode(png)), format="png")[..., :3] * 255).round()
    return float(np.all(np.abs(pixels - GGPLOT_GREY) <= 1, axis=-1).mean()) > 0.1


def test_the_ggplot_detector_tells_the_two_styles_apart() -> None:
    import io
    from matplotlib import pyplot as plt
    pictures = {}
    for style in ("ggplot", "default"):
        with plt.style.context(style):
            fig, ax = plt.subplots(figsize=(3, 2))
            ax.plot([0, 1], [1, 0])
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png")
            plt.close(fig)
        pictures[style] = base64.b64encode(buffer.getvalue()).decode()
    assert ggplot_styled(pictures["ggplot"]) and not ggplot_styled(pictures["default"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_style_leaks_into_the_plots_after_an_optuna_plot(path: Path) -> None:
    """Only a cell that draws with ``optuna.visualization.matplotlib`` may look like ggplot."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    leaked = [i for i, c in enumerate(cells) if c["cell_type"] == "code"
              and "optuna.visualization.matplotlib" not in "".join(c["source"])
              and any(ggplot_styled(png) for png in _pictures(c))]
    assert not leaked, f"{path.name}: cells {leaked} are drawn in Optuna's ggplot style"


def _output_text(cell: dict[str, Any], streams: bool) -> str:
    """The text of a code cell's printed output (``streams``) or of its displayed results
    (a widget's text, a repr, an HTML table)."""
    parts = []
    for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
        if (output.get("output_type") == "stream") != streams:
            continue
        values = [output.get("text", "")] + [output.get("data", {}).get(k, "") for k in ("text/plain", "text/html")]
        parts += ["".join(v) if isinstance(v, list) else v for v in values]
    return "\n".join(parts)


SHOWN_CODE = re.compile(r"print\(code_of\(([\w.]+)\)\)")
"""How a chapter prints a mechanism: ``print(code_of(name))`` (:mod:`ftlab.ui.source`)."""


def _shown_mechanisms() -> dict[str, Any]:
    """The names chapters print with ``code_of``, as they are bound in the chapters."""
    from ftlab.lessons import accumulation, checkpointing, halving, lion, lora, neftune, quant, random_search, schedules
    from ftlab.lessons import label_mask
    from ftlab.lessons import weight_decay as wd
    from ftlab.lessons.chunked_loss import ChunkedCrossEntropy
    return {"warmup_cosine_lr": schedules.warmup_cosine_lr, "wd.adamw_step": wd.adamw_step,
            "wd.adam_l2_step": wd.adam_l2_step, "neftune_noise": neftune.neftune_noise,
            "attach_neftune": neftune.attach_neftune, "lion_step": lion.lion_step,
            "accumulated_gradients": accumulation.accumulated_gradients,
            "RecomputeInBackward.forward": checkpointing.RecomputeInBackward.forward,
            "RecomputeInBackward.backward": checkpointing.RecomputeInBackward.backward,
            "random_points": random_search.random_points, "asha_stops": halving.asha_stops,
            "lora_forward": lora.lora_forward, "lora_scaling": lora.lora_scaling, "quantize_nf4": quant.quantize_nf4,
            "ChunkedCrossEntropy.forward": ChunkedCrossEntropy.forward,
            "ChunkedCrossEntropy.backward": ChunkedCrossEntropy.backward,
            "labels_for": label_mask.labels_for, "tokens_with_gradient": label_mask.tokens_with_gradient}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_a_mechanism_a_chapter_prints_is_the_packages_code_as_it_is_now(path: Path) -> None:
    """What the learner reads in a chapter's saved output is the function the tests check
    against the library: an edit to it without re-executing the chapter fails here."""
    from ftlab.ui.source import code_of
    known = _shown_mechanisms()
    for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] != "code":
            continue
        for name in SHOWN_CODE.findall(_text(cell["source"])):
            assert name in known, f"{path.name} cell {i} prints code_of({name}): add it to _shown_mechanisms"
            assert code_of(known[name]) in _output_text(cell, streams=True), (
                f"{path.name} cell {i}: its printed {name} is not the package's code now; re-execute the chapter")


def _notebook(*outputs: dict[str, Any]) -> dict[str, Any]:
    return {"cells": [{"cell_type": "markdown", "source": "Map: 0%| in prose is fine"},
                      {"cell_type": "code", "source": "", "outputs": list(outputs)}]}


def _stream(text: str, name: str = "stdout") -> dict[str, Any]:
    return {"output_type": "stream", "name": name, "text": text}


def _display(data: dict[str, Any]) -> dict[str, Any]:
    return {"output_type": "display_data", "data": data, "metadata": {}}


GOOD = _notebook(
    _stream(["LoRA r=8: training 80 steps\n", "LoRA r=8: 80 steps in 284.1 s · last train loss 0.766\n"]),
    _stream("warnings.warn(\n", name="stderr"),
    _display({"application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "image/png": "iVBORw0KGgo=",
              "text/plain": "Playground 'LR': knobs learning_rate; 2 runs"}),
    _display({"application/vnd.jupyter.widget-view+json": {"model_id": "y"}, "image/png": "iVBORw0KGgo=",
              "text/plain": "HBox(children=(VBox(children=(Dropdown(…"}),  # has its picture
    {"output_type": "execute_result", "execution_count": 3, "metadata": {},
     "data": {"text/plain": "In 80 steps (284 s, 101 tokens/s) exact match rose 0% -> 23%"}},
)

BAD = [
    (_display({"application/vnd.jupyter.widget-view+json": {"model_id": "z"},
               "text/plain": "Map:   0%|          | 0/3000 [00:00<?, ? examples/s]"}), "progress bar"),
    (_display({"text/plain": "Loading weights: 100%|##########| 272/272 [00:01<00:00, 180.2it/s]"}), "progress bar"),
    (_stream("λ=0.1:  40%|████      | 120/300 [00:30<00:45,  4.01step/s]\n", name="stderr"), "progress bar"),
    (_stream("step 1/80\rstep 2/80\r", name="stdout"), "carriage return"),
    (_display({"application/vnd.jupyter.widget-view+json": {"model_id": "w"},
               "text/plain": "VBox(children=(HTML(value='<h3>LR</h3>'), VBox(children=(FloatLogSlider(…"}),
     "widget without a static picture"),
    ({"output_type": "error", "ename": "ConfigError", "evalue": "learning_rate=5", "traceback": []}, "error output"),
    (_stream("Traceback (most recent call last):\n  File ...\nValueError: x\n", name="stderr"), "traceback on stderr"),
]


def test_a_clean_notebook_has_no_problems() -> None:
    assert problems(GOOD) == []


@pytest.mark.parametrize("output, expected", BAD, ids=[expected for _, expected in BAD])
def test_each_kind_of_debris_is_named_with_its_cell(output: dict[str, Any], expected: str) -> None:
    found = problems(_notebook(output))
    assert len(found) == 1 and found[0].startswith(f"cell 1: {expected}"), found


def test_every_debris_line_of_a_stream_counts() -> None:
    bar = "Map:   0%|          | 0/300 [00:00<?, ? examples/s]\n"
    assert len(problems(_notebook(_stream(bar * 3, name="stderr")))) == 3


# --- what ftlab writes into a notebook ---------------------------------------------------------

KERNEL_CELLS = [
    "import ftlab\n"
    "from ftlab.ui.widgets import MemoryPredictor\n"
    "config = ftlab.RunConfig(model='tiny', lora_r=0, system_prompt='', max_seq_length=384, train_size=64,\n"
    "                         max_steps=2, eval_steps=2, eval_size=8, exact_match_size=0, per_device_train_batch_size=4)\n"
    "model, tokenizer = ftlab.load_model(config)\n"
    "data = ftlab.load_data(config, tokenizer)\n"
    "len(data.train)",
    "run = ftlab.train(config, runs_dir={runs!r}, label='quiet')",
    "MemoryPredictor()",
]


def test_a_kernel_saves_no_progress_bars_and_two_lines_per_training_run(tmp_path: Path) -> None:
    # the real path: a Jupyter kernel, where datasets' Map and transformers' Loading weights
    # would each save a frozen widget bar unless `import ftlab` switched them off
    cells = [nbformat.v4.new_code_cell(source.format(runs=str(tmp_path / "runs"))) for source in KERNEL_CELLS]
    nb = nbformat.v4.new_notebook(cells=cells)
    NotebookClient(nb, kernel_name="python3", timeout=300).execute()
    saved = json.loads(nbformat.writes(nb))
    assert problems(saved) == []
    assert "%|" not in nbformat.writes(nb)
    load, train, predictor = (cell["outputs"] for cell in saved["cells"])
    assert [o["output_type"] for o in load] == ["execute_result"], load  # the row count, nothing else
    printed = "".join(_text(o["text"]) for o in train if o["output_type"] == "stream" and o["name"] == "stdout")
    start, end = printed.splitlines()
    assert start == "quiet: training 2 steps"
    assert re.fullmatch(r"quiet: 2 steps in \d+\.\d s · train loss \d+\.\d{3} \(mean of last 1 steps\) · "
                        r"eval loss \d+\.\d{3} -> \d+\.\d{3} · \S+ s/step",
                        end), end
    [shown] = predictor
    assert {"application/vnd.jupyter.widget-view+json", "image/png", "text/plain"} <= set(shown["data"])
    assert base64.b64decode(shown["data"]["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")  # saved as a picture
    assert _text(shown["data"]["text/plain"]).startswith("MemoryPredictor: smollm2-135m lora")


FAKE_KERNEL = ("from IPython.core.interactiveshell import InteractiveShell\n"
               "InteractiveShell.instance().kernel = 'a kernel'\n")
"""A process that ``ftlab.foundation.jupyter.in_jupyter_kernel`` takes for a Jupyter kernel."""


def test_in_a_kernel_import_ftlab_quiets_bitsandbytes_before_importing_it() -> None:
    # on CPUs with AVX512-BF16, importing bitsandbytes logs that it could not fetch a Hub kernel
    code = FAKE_KERNEL + ("import logging, ftlab, bitsandbytes\n"
                          "print(logging.getLogger('bitsandbytes.backends.cpu.ops').isEnabledFor(logging.WARNING))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False"]
    assert "kernels-community" not in done.stderr, done.stderr


QUIET_CHECK = "import datasets, transformers; print(datasets.is_progress_bar_enabled(), " \
              "transformers.utils.logging.is_progress_bar_enabled(), transformers.utils.logging.get_verbosity())"


@pytest.mark.parametrize("setup", ["import ftlab",
                                   "from IPython.core.interactiveshell import InteractiveShell\n"
                                   "InteractiveShell.instance()\nimport ftlab"], ids=["script", "terminal IPython"])
def test_outside_a_kernel_import_ftlab_leaves_the_libraries_as_they_were(setup: str) -> None:
    # a script or a terminal keeps its live bars and the libraries' default logging
    before = subprocess.run([sys.executable, "-c", QUIET_CHECK], capture_output=True, text=True, check=True).stdout
    after = subprocess.run([sys.executable, "-c", f"{setup}\n{QUIET_CHECK}"], capture_output=True, text=True,
                           check=True).stdout
    assert after == before and before.split()[:2] == ["True", "True"], (before, after)


def _recorded(progress: bool = True, ends: bool = True, status: str = "completed") -> Recorder:
    """A Recorder driven through three of five steps as the Trainer would, without training."""
    recorder = Recorder(Run(config=RunConfig(), label="demo"), progress)
    recorder.on_train_begin(None, SimpleNamespace(max_steps=5), None)
    for step in (1, 2, 3):
        recorder.on_step_begin(None, SimpleNamespace(global_step=step - 1), None)
        recorder.on_step_end(None, SimpleNamespace(global_step=step), None)
        recorder.on_log(None, SimpleNamespace(global_step=step), None, logs={"loss": 1.0 / step})
    recorder.on_log(None, SimpleNamespace(global_step=3), None, logs={"eval_loss": 0.5})
    if ends:
        recorder.on_train_end(None, SimpleNamespace(global_step=3), None)
    recorder.run.status = status
    _summarize(recorder.run, 3, None)  # train() sums a run up before its end line
    return recorder


@pytest.mark.parametrize("ends, status, end", [
    (True, "completed", r"demo: 3 steps in \d+\.\d s"),
    (False, "interrupted", r"demo: interrupted after 3 of 5 steps \(\d+\.\d s\)"),
    (False, "completed", r"demo: stopped after 3 of 5 steps \(\d+\.\d s\)"),  # an error on its way up
], ids=["finished", "interrupted", "failed"])
def test_training_progress_is_a_start_line_and_an_end_line(capsys, ends: bool, status: str, end: str) -> None:
    recorder = _recorded(ends=ends, status=status)
    recorder.close()
    recorder.close()  # reported once
    out = capsys.readouterr().out
    assert "\r" not in out
    assert out.splitlines()[0] == "demo: training 5 steps"
    # the end line shows the run's own metrics, named as everywhere else (Run.summary)
    assert re.fullmatch(end + r" · train loss 0\.333 \(mean of last 1 steps\) · eval loss 0\.500 -> 0\.500"
                              r" · \S+ s/step", out.splitlines()[1])
    assert len(out.splitlines()) == 2


def test_no_progress_prints_nothing(capsys) -> None:
    _recorded(progress=False).close()
    assert capsys.readouterr().out == ""
