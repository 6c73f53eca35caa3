"""What a learner does in JupyterLab 4, as Playwright calls on one page.

Notebook level: open a notebook, Run All (the Run menu), run one cell (Shift+Enter), save
(Ctrl+S), and read what the outputs show. Widget level: the ftlab widgets carry stable CSS
classes (``ftlab-playground``, ``ftlab-knob-<field>``, ``ftlab-run``, ``ftlab-status``,
``ftlab-panel-<name>``, ``ftlab-table``; ``ftlab-memory-*`` on the MemoryPredictor), so a
knob is found by the RunConfig field it sets, never by its position. Latencies are measured
inside the page: a MutationObserver stamps every change of a plot's ``src`` and of a text with
``performance.now()``, and a capturing listener stamps the click or change that caused it.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page

from labserver import LabServer

PROMPTS = "[...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt')]"
BUSY = f"{PROMPTS}.some(e => e.textContent.includes('*'))"
"""JS: a cell of the notebook on show is running or queued (its prompt reads ``[*]:``)."""

PROGRESS_BAR = re.compile(r"\d+%\||\w+/s\]")
"""tqdm's marks (``0%|``, ``3.1it/s]``): a progress bar saved as text."""

WIDGET_REPR = re.compile(r"(VBox|HBox|Box)\(children=\(")
"""ipywidgets' text repr: what a reader sees of a widget saved without a picture."""

OUTPUT_ERROR = re.compile(r"Traceback \(most recent call last\)|Error displaying widget|Error rendering output"
                          r"|Open Browser Console for more detailed log")
"""What an output area shows for a failed cell or a widget that could not be drawn."""


# --- notebooks -------------------------------------------------------------------------------------


def open_notebook(page: Page, lab: LabServer, path: str, workspace: str) -> float:
    """Open ``path`` (relative to the server's root), wait until all its cells are attached and
    its kernel is idle; seconds taken."""
    started = time.perf_counter()
    cells = len(json.loads((lab.notebooks / path).read_text())["cells"])
    page.goto(lab.page_url(path, workspace))
    page.wait_for_function("n => document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell').length >= n",
                           arg=cells, timeout=60_000, polling=100)
    wait_idle(page, 120)
    lab.wait_kernels_ready(120)
    return time.perf_counter() - started


def wait_idle(page: Page, timeout_s: float) -> None:
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=timeout_s * 1000)


def menu(page: Page, top: str, item: str) -> None:
    """Click ``top`` in the menu bar, then ``item`` once it is enabled (a notebook command is
    disabled until its kernel is ready; a click on a disabled item does nothing)."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(f"^{re.escape(top)}$")).click()
    entry = page.locator(".lm-Menu-item:not(.lm-mod-disabled)", has=page.locator(
        ".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")))
    entry.click(timeout=30_000)


def prompts(page: Page) -> list[str]:
    """The execution prompts of the notebook on show, code cell by code cell (``[3]:``, ``[*]:``)."""
    return page.evaluate(f"{PROMPTS}.map(e => e.textContent.trim())")


def run_all(page: Page, timeout_s: float) -> float:
    """Run > Run All Cells, and wait until no cell is running or queued; seconds taken."""
    before = prompts(page)
    menu(page, "Run", "Run All Cells")
    started = time.perf_counter()
    # the saved notebook already has numbered prompts: wait to see the run begin (a [*] or new numbers)
    page.wait_for_function(f"before => {BUSY} || JSON.stringify({PROMPTS}.map(e => e.textContent.trim())) "
                           f"!== JSON.stringify(before)", arg=before, timeout=30_000)
    page.wait_for_function(f"() => !({BUSY})", timeout=timeout_s * 1000, polling=500)
    wait_idle(page, 60)
    return time.perf_counter() - started


def code_cell(page: Page, lab: LabServer, path: str, startswith: str) -> Locator:
    """The cell of notebook ``path`` whose source begins with ``startswith`` (found in the file:
    a cell whose source is collapsed has no editor to read)."""
    cells = json.loads((lab.notebooks / path).read_text())["cells"]
    for i, cell in enumerate(cells):
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if cell["cell_type"] == "code" and source.lstrip().startswith(startswith):
            return page.locator(".jp-NotebookPanel .jp-Cell").nth(i)
    raise AssertionError(f"{path}: no code cell starts with {startswith!r}")


def run_cell(page: Page, cell: Locator, timeout_s: float) -> float:
    """Click into ``cell`` and press Shift+Enter, as a learner runs one cell; seconds to its prompt number."""
    cell.locator(".cm-content").click()
    started = time.perf_counter()
    page.keyboard.press("Shift+Enter")
    prompt = cell.locator(".jp-InputArea-prompt")
    page.wait_for_function("e => /\\[\\d+\\]/.test(e.textContent) && !e.textContent.includes('*')",
                           arg=prompt.element_handle(), timeout=timeout_s * 1000, polling=100)
    return time.perf_counter() - started


def save(page: Page) -> None:
    """Ctrl+S, and wait until the notebook's tab is no longer marked as changed."""
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-NotebookPanel-toolbar").click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !document.querySelector('.lm-DockPanel-tabBar .lm-TabBar-tab.jp-mod-current"
                           ".jp-mod-dirty')", timeout=30_000)


def show(locator: Locator) -> None:
    """Scroll ``locator`` to the top of the notebook's view. Cells off screen have estimated
    heights (content-visibility: auto) that change once painted, so one scroll can land short:
    scroll again until it stays put."""
    for _ in range(5):
        top = locator.evaluate("""async e => { e.scrollIntoView({block: 'start'});
            await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
            return e.getBoundingClientRect().top; }""")
        if locator.evaluate("e => e.getBoundingClientRect().top") == top and 0 <= top < 400:
            return
        locator.page.wait_for_timeout(200)


def output_texts(page: Page) -> list[str]:
    """The text of every output of the notebook on show."""
    return page.evaluate("[...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) "
                         ".jp-OutputArea-output')].map(e => e.textContent)")


def output_problems(page: Page) -> list[str]:
    """Outputs that show a traceback, a widget that failed to render, a widget repr or a bar."""
    problems = []
    for text in output_texts(page):
        for what, pattern in (("error", OUTPUT_ERROR), ("widget repr", WIDGET_REPR), ("progress bar", PROGRESS_BAR)):
            if pattern.search(text):
                text = text.strip()
                shown = text if len(text) < 500 else f"{text[:200]} [...] {text[-300:]}"  # a traceback ends in its error
                problems.append(f"{what}: {shown!r}")
    return problems


def file_problems(path: Path) -> list[str]:
    """Error outputs and stderr tracebacks saved in the notebook file at ``path``."""
    problems = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        for output in cell.get("outputs", []):
            text = output.get("text", "")
            text = text if isinstance(text, str) else "".join(text)
            if output.get("output_type") == "error":
                problems.append(f"cell {i}: {output.get('ename')}: {output.get('evalue')}")
            elif output.get("name") == "stderr" and "Traceback" in text:
                problems.append(f"cell {i}: traceback on stderr: {text[-300:]!r}")
    return problems


def images_loaded(locator: Locator) -> list[dict[str, Any]]:
    """Every <img> under ``locator``: whether it loaded and its drawn size."""
    return locator.evaluate_all("els => els.map(e => ({complete: e.complete, w: e.naturalWidth, h: e.naturalHeight, "
                                "shown: e.getBoundingClientRect().width}))")


# --- widgets ---------------------------------------------------------------------------------------

OBSERVE = """
([root, images, texts, clickable]) => {
  const log = {events: [], t0: performance.now()};
  const now = () => performance.now();
  for (const sel of images) {
    const img = root.querySelector(sel);
    if (!img) throw new Error('no ' + sel);
    new MutationObserver(() => log.events.push({t: now(), kind: 'image', what: sel, src: img.src}))
      .observe(img, {attributes: true, attributeFilter: ['src']});
  }
  for (const sel of texts) {
    const el = root.querySelector(sel);
    if (!el) throw new Error('no ' + sel);
    new MutationObserver(() => log.events.push({t: now(), kind: 'text', what: sel, text: el.innerText}))
      .observe(el, {childList: true, subtree: true, characterData: true});
  }
  root.addEventListener('click', e => {
    if (e.target.closest(clickable)) log.events.push({t: now(), kind: 'click'});
  }, true);
  root.addEventListener('change', e => log.events.push({t: now(), kind: 'change', what: e.target.tagName}), true);
  window.__ftlabLog = log;
}
"""
"""JS: stamp every change of the ``images``' src and the ``texts``' text, and every click on
``clickable`` and change of an input, in ``window.__ftlabLog.events`` (ms since page load)."""


def observe(root: Locator, images: list[str], texts: list[str], clickable: str = "button") -> None:
    root.evaluate(f"(root, args) => ({OBSERVE})([root, ...args])", [images, texts, clickable])


def events(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("window.__ftlabLog.events")


def event_count(page: Page) -> int:
    return page.evaluate("window.__ftlabLog.events.length")


def wait_events(page: Page, since: int, condition: str, timeout_s: float) -> list[dict[str, Any]]:
    """Wait until the events after index ``since`` satisfy JS ``condition`` (a function of that
    list); return those events."""
    page.wait_for_function(f"since => ({condition})(window.__ftlabLog.events.slice(since))", arg=since,
                           timeout=timeout_s * 1000, polling=50)
    return events(page)[since:]


def set_knob(root: Locator, field: str, value: str) -> None:
    """Move the Playground knob on ``field`` as a learner does: choose a dropdown option by its
    label, type into a slider's readout and press Enter, or tick a checkbox ("true"/"false")."""
    knob = root.locator(f".ftlab-knob-{field}")
    kind = knob.get_attribute("class") or ""
    if "widget-dropdown" in kind:
        knob.locator("select").select_option(label=value)
    elif "widget-slider" in kind:
        readout = knob.locator(".widget-readout")
        readout.click()
        readout.fill(value)
        readout.press("Enter")
    elif "widget-checkbox" in kind:
        knob.locator("input[type=checkbox]").set_checked(value.lower() in ("true", "1", "on"))
    else:
        raise AssertionError(f"knob {field}: no way to set a {kind!r}")


def knob_choices(root: Locator) -> list[tuple[str, list[str]]]:
    """(field, values to try) for every knob: a dropdown's other options, a slider's readout
    times 3 and divided by 3 (what a chapter without listed settings gets moved)."""
    return root.evaluate("""root => [...root.querySelectorAll('.ftlab-knob')].map(k => {
        const field = [...k.classList].find(c => c.startsWith('ftlab-knob-')).slice('ftlab-knob-'.length);
        const sel = k.querySelector('select');
        if (sel) return [field, [...sel.options].filter(o => !o.selected).map(o => o.label)];
        const readout = k.querySelector('.widget-readout');
        if (readout) { const v = parseFloat(readout.textContent);
                       return [field, isFinite(v) && v !== 0 ? [String(v * 3), String(v / 3)] : []]; }
        return [field, []];
    })""")


def table_rows(root: Locator) -> int:
    """Rows (runs) in the Playground's table, header excluded."""
    return root.locator(".ftlab-table tr:has(td)").count()


def dropdown_geometry(root: Locator) -> list[dict[str, Any]]:
    """Every dropdown under ``root``: its box against its declared width, the select's client
    and scroll widths, and the widest option's text measured in the select's own font."""
    return root.evaluate("""root => [...root.querySelectorAll('.widget-dropdown')].map(box => {
        const sel = box.querySelector('select'), label = box.querySelector('.widget-label');
        const style = getComputedStyle(sel);
        const ctx = document.createElement('canvas').getContext('2d');
        ctx.font = style.font;
        const text = Math.max(...[...sel.options].map(o => ctx.measureText(o.label).width));
        const b = box.getBoundingClientRect(), s = sel.getBoundingClientRect();
        return {label: label ? label.textContent : '', declared: box.style.width, box: b.width, box_right: b.right,
                select: s.width, select_right: s.right, client: sel.clientWidth, scroll: sel.scrollWidth,
                text: text, padding: parseFloat(style.paddingLeft) + parseFloat(style.paddingRight)};
    })""")


def slider_tracks(root: Locator) -> list[tuple[str, float]]:
    """(description, track width in px) of every horizontal slider under ``root``."""
    return root.evaluate("""root => [...root.querySelectorAll('.widget-hslider')].map(s => [
        (s.querySelector('.widget-label') || {}).textContent || '',
        s.querySelector('.slider-container').getBoundingClientRect().width])""")


def clipped_labels(root: Locator) -> list[str]:
    """Descriptions shown cut (ellipsis): their text is wider than the space they get."""
    return root.evaluate("""root => [...root.querySelectorAll('.widget-label, .widget-label-basic')]
        .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
        .map(e => `${e.textContent} (${e.scrollWidth}px text in ${e.clientWidth}px)`)""")
