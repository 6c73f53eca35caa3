"""The widgets in a real JupyterLab in headless Chromium: what nbval cannot see.

nbval checks that cells execute. These tests check what a learner gets: a committed chapter
shows pictures before anything runs; after Run All the Playground renders, Run trains with
a live plot and adds one run per press (and none for a config already shown); the
MemoryPredictor redraws within a second and shows what ``ftlab.memory.gpu_need`` says; no
dropdown is clipped; and neither the browser console, nor the server log, nor a cell output
reports an error. Each test leaves a screenshot in ``out/browser/`` and its timings in
``out/browser/timings.json``.

Chapters with a Playground are one ``PLAYGROUND_CASES`` entry each.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import pytest

from labserver import CHROMIUM, NO_CHROMIUM, NOTEBOOKS, TRUSTED

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(NO_CHROMIUM, allow_module_level=True)
pytest.importorskip("playwright.sync_api",
                    reason="browser tests skipped: Playwright is not installed (pip install -e '.[dev]')")

import labpage as lp  # noqa: E402  (imports Playwright)

LIVE_PLOT_S = 10.0
"""Run pressed -> the loss plot redrawn while training, at most."""
REDRAW_S = 1.0
"""A MemoryPredictor control changed -> its plot and its summary redrawn, at most each."""
MIN_TRACK_PX = 60
"""A slider's track at least this wide: one a learner can drag (a squeezed one was 5 px)."""
RUN_ALL_S = 900
RUN_S = 300

FINISHED = r"/: trained in |: from the run cache in |interrupted|Error|already shown/"
"""JS regex: the Playground's status line after a press of Run (success or not)."""
OK_COLOUR = "#1a7f37"
"""The status line's colour for a finished run (base.STATUS_COLORS['ok'])."""


@dataclass(frozen=True)
class PlaygroundCase:
    """A chapter whose Playground is checked after Run All."""

    pattern: str
    """The notebook, as a glob under notebooks/."""
    runs: tuple[dict[str, str], ...] | None = None
    """Two knob settings, one per press of Run: field -> an option's label or a readout's text.
    None moves the first knob that has choices (another dropdown option, or its slider value x3
    and /3), skipping configs the chapter already shows."""


PLAYGROUND_CASES = [
    PlaygroundCase("02_learning_rate_and_schedules.ipynb", ({"learning_rate": "3e-4", "lr_scheduler_type": "linear"},
                                                            {"learning_rate": "2e-3", "lr_scheduler_type": "cosine"})),
    PlaygroundCase("07_*.ipynb"),
]


def _playground_param(case: PlaygroundCase):
    chapter = case.pattern[:2]
    if not sorted(NOTEBOOKS.glob(case.pattern)):
        return pytest.param(case, id=chapter, marks=pytest.mark.skip(
            reason=f"notebooks/{case.pattern} does not exist yet: its Playground is checked once the chapter is added"))
    return pytest.param(case, id=chapter)


def _wait_images(cell, at_least: int, timeout_ms: int = 30_000) -> list[dict]:
    """The cell's output images once ``at_least`` of them have loaded (or what there is at the timeout)."""
    imgs = cell.locator(".jp-OutputArea-output img")
    try:
        cell.page.wait_for_function("([el, n]) => { const i = [...el.querySelectorAll('.jp-OutputArea-output img')];"
                                    " return i.length >= n && i.every(e => e.complete && e.naturalWidth > 0); }",
                                    arg=[cell.element_handle(), at_least], timeout=timeout_ms, polling=200)
    except Exception:
        pass  # the assertion below says what is missing
    return lp.images_loaded(imgs)


# --- 1. a committed chapter before anything runs ------------------------------------------------------


@pytest.mark.parametrize("view", ["committed", "trusted"])
@pytest.mark.parametrize("chapter", TRUSTED, ids=[name[:2] for name in TRUSTED])
def test_committed_chapter_shows_pictures(page, lab, timings, chapter, view):
    """Opened before running: every saved figure and widget is a picture, none a text repr or a bar.
    ``committed`` is the untrusted view of a fresh clone (the widgets' PNG fallbacks);
    ``trusted`` is the view after ``make setup`` signed the notebooks (the saved widget state)."""
    seconds = lp.open_notebook(page.page, lab, f"{view}/{chapter}", page.name)
    saved = json.loads((NOTEBOOKS / chapter).read_text())["cells"]
    cells = page.page.locator(".jp-NotebookPanel .jp-Cell")
    assert cells.count() == len(saved)
    widget_cells = []
    for i, cell in enumerate(saved):
        data = [o.get("data", {}) for o in cell.get("outputs", [])]
        pictures = sum("image/png" in d for d in data)
        if not pictures:
            continue
        dom = cells.nth(i)
        images = _wait_images(dom, pictures)
        loaded = [im for im in images if im["complete"] and im["w"] > 0]
        assert len(loaded) >= pictures, f"cell {i}: {pictures} saved picture(s), {images} shown"
        if any("application/vnd.jupyter.widget-view+json" in d for d in data):
            widget_cells.append(i)
            if view == "trusted":  # drawn from the saved widget state, not the fallback picture
                assert dom.locator(".jupyter-widgets img").count() >= 1, f"cell {i}: saved widget not drawn"
            else:
                assert dom.locator(".jp-OutputArea-output[data-mime-type='image/png'] img").count() >= 1, \
                    f"cell {i}: the widget's PNG fallback is not what is shown"
    assert widget_cells, f"{chapter} has no saved widget output to check"
    assert lp.output_problems(page.page) == []
    lp.show(cells.nth(widget_cells[0]))
    page.screenshot()
    assert page.console_errors == []
    timings.record(page.name, open_s=seconds, widget_cells=widget_cells)


# --- 1b. exercises a learner cannot spoil -----------------------------------------------------------


ANSWER_FIGURE = re.compile(r"(?<![\d.])\d+\.\d{3,}(?![\d])")
"""A computed figure as chapters print them (the same rule as tests/test_committed_notebooks.py)."""

VISIBLE_OUTPUT_TEXT = """n => {
    const text = el => {
        if (el.nodeType === Node.TEXT_NODE) return el.textContent;
        if (el.nodeType !== Node.ELEMENT_NODE) return '';
        const style = getComputedStyle(el);
        if (style.display === 'none' || style.visibility === 'hidden') return '';
        return [...el.childNodes].map(text).join('');
    };
    const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')];
    return cells.slice(0, n + 1).map(c => [...c.querySelectorAll('.jp-Cell-outputWrapper')].map(text).join('\\n'));
}"""
"""The output text a reader can see in each cell up to cell ``n``: hidden elements (a collapsed
output area is kept in the page with display: none) do not count."""


def _answer_cells(cells: list[dict]) -> list[int]:
    return [i for i, c in enumerate(cells) if c["cell_type"] == "code"
            and c.get("metadata", {}).get("jupyter", {}).get("source_hidden")]


def _printed(cell: dict) -> str:
    return "".join("".join(o.get("text", "")) for o in cell.get("outputs", []) if o.get("output_type") == "stream")


ANSWER_CHAPTERS = [p.name for p in sorted(NOTEBOOKS.glob("[0-9]*.ipynb")) if _answer_cells(json.loads(p.read_text())["cells"])]


@pytest.mark.parametrize("view, chapter", [("committed", c) for c in ANSWER_CHAPTERS]
                         + [("trusted", c) for c in TRUSTED if c in ANSWER_CHAPTERS],
                         ids=[f"committed-{c[:3].rstrip('_')}" for c in ANSWER_CHAPTERS]
                         + [f"trusted-{c[:3].rstrip('_')}" for c in TRUSTED if c in ANSWER_CHAPTERS])
def test_answers_open_collapsed_and_nothing_above_a_question_gives_one_away(page, lab, view, chapter):
    """Opened as a learner opens it (untrusted from a clone; trusted after ``make setup``): every
    answer cell shows only its two collapsed bars, and no figure an answer computes is readable
    in any output above it (a saved Playground, a table) unless the chapter printed it itself."""
    p = page.page
    lp.open_notebook(p, lab, f"{view}/{chapter}", page.name)
    saved = json.loads((NOTEBOOKS / chapter).read_text())["cells"]
    dom = p.locator(".jp-NotebookPanel .jp-Cell")
    for i in _answer_cells(saved):
        cell = dom.nth(i)
        lp.show(cell)
        assert cell.locator(".jp-InputPlaceholder").count() == 1, f"{chapter} cell {i}: the answer's code is open"
        assert cell.locator(".jp-OutputPlaceholder").count() == 1, f"{chapter} cell {i}: the answer's output is open"
        earlier = "".join(_printed(c) for c in saved[:i])
        figures = {f for f in ANSWER_FIGURE.findall(_printed(saved[i])) if f not in earlier}
        seen = p.evaluate(VISIBLE_OUTPUT_TEXT, i)
        assert [f for f in figures if f in seen[i]] == [], f"{chapter} cell {i}: the collapsed answer shows its figures"
        above = "\n".join(seen[:i])
        assert [f for f in figures if f in above] == [], f"{chapter} cell {i}: its answer can be read above it"
    page.screenshot()
    assert page.console_errors == []


# --- 2. the Playground after Run All ---------------------------------------------------------------------


def _settings(root, case: PlaygroundCase) -> list[dict[str, str]]:
    if case.runs is not None:
        return [dict(s) for s in case.runs]
    for field, values in lp.knob_choices(root):
        if len(values) >= 2:
            return [{field: v} for v in values]
    raise AssertionError("no knob of this Playground has two other values to try")


def _press_run(bp, root, timeout_s: float, shot: str = "") -> dict:
    """Click Run and wait for the status line to say how it ended; timings in s after the click.
    ``shot``: a screenshot suffix for the page as the live plot first appears."""
    page = bp.page
    since = lp.event_count(page)
    root.locator(".ftlab-run").click()
    done = f"evs => evs.some(e => e.kind === 'text' && e.what === '.ftlab-status' && {FINISHED}.test(e.text))"
    if shot:
        live = "evs => evs.some(e => e.kind === 'image' && e.what === '.ftlab-panel-loss')"
        try:
            lp.wait_events(page, since, f"evs => ({live})(evs) || ({done})(evs)", LIVE_PLOT_S + 20)
            lp.show(root.locator(".ftlab-panel-loss"))
            bp.screenshot(shot)
        except Exception:
            pass  # judged below from the events
    evs = lp.wait_events(page, since, done, timeout_s)
    click = next(e["t"] for e in evs if e["kind"] == "click")
    end = next(e for e in evs if e["kind"] == "text" and e["what"] == ".ftlab-status"
               and re.search(FINISHED.strip("/"), e["text"]))
    images = [e["t"] for e in evs if e["kind"] == "image" and e["what"] == ".ftlab-panel-loss" and e["t"] <= end["t"]]
    training = [e for e in evs if e["kind"] == "text" and e["what"] == ".ftlab-status" and "training ·" in e["text"]]
    # the first redraw can be the step-0 evaluation alone; the first train-loss point comes with step 1
    first_loss = next((e["t"] for e in training if re.search(r"step [1-9]\d*/", e["text"])), None)
    return {"status": end["text"].strip(), "done_s": (end["t"] - click) / 1000,
            "first_plot_s": (images[0] - click) / 1000 if images else None,
            "first_train_loss_s": (first_loss - click) / 1000 if first_loss else None,
            "plot_updates": len(images), "training_status": [e["text"].strip() for e in training]}


@pytest.mark.parametrize("case", [_playground_param(c) for c in PLAYGROUND_CASES])
def test_playground_after_run_all(page, lab, timings, case):
    """Run All without errors; the Playground renders; each press of Run with new knobs shows a
    live plot within 10 s and adds a run; a press with nothing changed adds nothing."""
    name = sorted(NOTEBOOKS.glob(case.pattern))[0].name
    p = page.page
    lp.open_notebook(p, lab, f"ci/{name}", page.name)
    run_all_s = lp.run_all(p, RUN_ALL_S)
    timings.record(page.name, run_all_s=run_all_s)
    unrun = [x for x in lp.prompts(p) if not re.fullmatch(r"\[\d+\]:", x)]
    assert unrun == [], f"Run All left cells unrun or failed: {unrun}; outputs: {lp.output_problems(p)}"
    assert lp.output_problems(p) == []
    lp.save(p)
    assert lp.file_problems(lab.notebooks / "ci" / name) == []

    root = p.locator(".ftlab-playground")
    assert root.count() >= 1, "no Playground rendered after Run All"
    root = root.first
    lp.show(root)
    knobs = root.locator(".ftlab-knob")
    assert knobs.count() >= 1 and all(knobs.nth(i).is_visible() for i in range(knobs.count()))
    assert root.locator(".ftlab-run").is_enabled()
    panels = root.locator("img.ftlab-panel")
    assert panels.count() >= 1 and all(im["complete"] and im["w"] > 0 for im in lp.images_loaded(panels))
    geometry = lp.dropdown_geometry(root)
    assert [g for g in geometry if g["scroll"] > g["client"] or g["text"] + g["padding"] > g["client"] + 0.5] == [], \
        "a dropdown cuts its options"
    assert [t for t in lp.slider_tracks(root) if t[1] < MIN_TRACK_PX] == [], "a slider track is squeezed"
    assert lp.clipped_labels(root) == []

    lp.observe(root, [f".ftlab-panel-{n}" for n in _panel_names(root)], [".ftlab-status", ".ftlab-table"],
               clickable=".ftlab-run")
    rows = lp.table_rows(root)
    runs = []
    for setting in _settings(root, case):
        if len(runs) == 2:
            break
        before = root.locator(".ftlab-label input").input_value()
        for field, value in setting.items():
            lp.set_knob(root, field, value)
        # the label box follows the knobs kernel-side: it changing proves the kernel got them
        p.wait_for_function("([el, before]) => el.value !== before",
                            arg=[root.locator(".ftlab-label input").element_handle(), before], timeout=10_000)
        result = _press_run(page, root, RUN_S, shot=f"-run{len(runs) + 1}-live")
        result["setting"] = setting
        if case.runs is None and "already shown" in result["status"]:
            continue  # an automatic choice the chapter had already run: take the next
        runs.append(result)
        assert "already shown" not in result["status"] and "Error" not in result["status"], result["status"]
        assert OK_COLOUR in (root.locator(".ftlab-status span").get_attribute("style") or ""), result["status"]
        assert result["first_plot_s"] is not None and result["first_plot_s"] <= LIVE_PLOT_S, result
        assert result["training_status"], f"no live update while training: {result}"
        assert lp.table_rows(root) == rows + len(runs), "each run adds one row to the table"
        timings.record(page.name, runs=runs)
    assert len(runs) == 2
    lp.show(root.locator(".ftlab-panel-loss"))
    page.screenshot()

    since = lp.event_count(p)
    again = _press_run(page, root, 60)
    assert "already shown" in again["status"], again
    assert lp.table_rows(root) == rows + 2, "an unchanged config added a row"
    assert not [e for e in lp.events(p)[since:] if e["kind"] == "image"], "an unchanged config redrew the plot"
    timings.record(page.name, rerun_unchanged={"status": again["status"], "done_s": again["done_s"]})
    assert lp.output_problems(p) == []
    assert page.console_errors == []


def _panel_names(root) -> list[str]:
    return root.evaluate("root => [...root.querySelectorAll('img.ftlab-panel')].map(e => [...e.classList]"
                         ".find(c => c.startsWith('ftlab-panel-')).slice('ftlab-panel-'.length))")


# --- 3. the MemoryPredictor --------------------------------------------------------------------------------


def _predictor_settings(root) -> dict:
    """What the predictor's controls show now."""
    return root.evaluate("""root => {
        const q = c => root.querySelector('.ftlab-memory-' + c);
        return {model: q('model').querySelector('select').value, method: q('method').querySelector('select').value,
                batch: parseInt(q('batch').querySelector('.widget-readout').textContent),
                seq_len: parseInt(q('seq_len').querySelector('.widget-readout').textContent),
                checkpointing: q('checkpointing').querySelector('input').checked,
                optim: q('optim').querySelector('select').value, bf16: q('bf16').querySelector('input').checked,
                weights: q('weights').querySelector('select').value, gpu: q('gpu').querySelector('select').value,
                devices: parseInt(q('devices').querySelector('select').value),
                strategy: q('strategy').querySelector('select').value};
    }""")


def _estimate_gib(s: dict) -> float:
    """One GPU's need for the settings ``s``, computed here with the fits table's accounting
    (``gpu_need`` of ``method_config``): a published size stands on the smollm2-135m preset with
    its own architecture; the weights dropdown shows labels, mapped back to dtypes."""
    from ftlab.memory import GiB, gpu_need
    from ftlab.memory.fits import MODEL_SIZES, method_config

    config = method_config(s["method"], s["checkpointing"]).replace(
        model="smollm2-135m" if s["model"] in MODEL_SIZES else s["model"], per_device_train_batch_size=s["batch"],
        max_seq_length=max(16, s["seq_len"]), optim=s["optim"], bf16=s["bf16"])
    weights = "bfloat16" if s["weights"].startswith("bf16") else "float32"
    return gpu_need(config, weights=weights, seq_len=s["seq_len"], model_config=MODEL_SIZES.get(s["model"]),
                    devices=s["devices"], strategy=s["strategy"])["total"] / GiB


def test_memory_predictor(page, lab, timings):
    """Model, method and checkpointing changed: the plot and the summary redraw within 1 s each,
    the total shown is the fits table's accounting, and no dropdown or description is cut."""
    p = page.page
    chapter = "ci/06_lora_qlora_and_memory.ipynb"
    lp.open_notebook(p, lab, chapter, page.name)
    cell = lp.code_cell(p, lab, chapter, "from ftlab import MemoryPredictor")
    cell_s = lp.run_cell(p, cell, 180)
    root = cell.locator(".ftlab-memory-predictor")
    root.wait_for(state="visible")
    lp.show(cell)
    assert all(im["complete"] and im["w"] > 0 for im in lp.images_loaded(root.locator("img.ftlab-memory-plot")))

    geometry = lp.dropdown_geometry(root)
    assert len(geometry) == 7  # model, method, optimizer, weights, GPU, GPUs, strategy
    for g in geometry:
        declared = float(g["declared"].removesuffix("px"))
        assert abs(g["box"] - declared) <= 1, f"{g['label']}: {g['box']}px wide, declared {declared}px: {g}"
        assert g["select_right"] <= g["box_right"] + 0.5, f"{g['label']}: the select sticks out of its box: {g}"
        assert g["scroll"] <= g["client"], f"{g['label']}: the select scrolls: {g}"
        assert g["text"] + g["padding"] <= g["client"] + 0.5, f"{g['label']}: the longest option is cut: {g}"
    assert [t for t in lp.slider_tracks(root) if t[1] < MIN_TRACK_PX] == [], "a slider track is squeezed"
    assert lp.clipped_labels(root) == []

    lp.observe(root, [".ftlab-memory-plot"], [".ftlab-memory-summary"], clickable="input")
    changes = []
    for control, value in (("model", "7B"), ("method", "qlora"), ("checkpointing", True)):
        since = lp.event_count(p)
        target = root.locator(f".ftlab-memory-{control}")
        if isinstance(value, bool):
            target.locator("input[type=checkbox]").set_checked(value)
        else:
            target.locator("select").select_option(value)
        evs = lp.wait_events(p, since, "evs => evs.some(e => e.kind === 'image') && evs.some(e => e.kind === 'text')",
                             10)
        changed = next(e["t"] for e in evs if e["kind"] == "change")
        plot_s = (next(e["t"] for e in evs if e["kind"] == "image") - changed) / 1000
        summary_s = (next(e["t"] for e in evs if e["kind"] == "text") - changed) / 1000
        settings = _predictor_settings(root)
        summary = root.locator(".ftlab-memory-summary").inner_text()
        assert settings["devices"] == 1 and settings["strategy"] == "ddp"  # "one GPU" below
        expected = f"{_estimate_gib(settings):.2f} GiB"
        changes.append({"control": control, "value": value, "plot_s": plot_s, "summary_s": summary_s,
                        "shown": summary.split(" on one GPU")[0], "estimate": expected})
        timings.record(page.name, run_cell_s=cell_s, redraws=changes)
        assert plot_s <= REDRAW_S and summary_s <= REDRAW_S, changes[-1]
        assert summary.startswith(expected + " on one GPU"), f"shown {summary!r}, gpu_need says {expected} for {settings}"
    assert settings["model"] == "7B" and settings["method"] == "qlora" and settings["checkpointing"]
    page.screenshot()
    assert lp.output_problems(p) == []
    assert page.console_errors == []


# --- 4. no errors anywhere ---------------------------------------------------------------------------------


def test_no_errors_in_console_or_server_log(lab, all_console_errors):
    """Every page's console (checked per test too) and the server's log, kernels included."""
    assert all_console_errors == []
    errors = lab.log_errors()
    assert errors == [], "the server log reports:\n" + "\n---\n".join(errors)
