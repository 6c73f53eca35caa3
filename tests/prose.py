"""Every number a chapter's prose states must be one its outputs show, or be marked an input.

A chapter is re-run on other machines and profiles, and its prose is easy to leave behind:
"about 4 bits each" after the measured figure moved, "350 examples" typed in from a run
long gone. :func:`unsupported_numbers` lists the numbers in a notebook's markdown cells
that no output of the same notebook shows; ``tests/test_notebook_prose.py`` runs it over
the committed notebooks.

**What counts as a number in prose.** Digits standing as a word of their own: ``0.77``,
``3,000``, ``1e-6``, ``22.9%``, ``4x``, ``135M`` (``k``/``K``, ``M``, ``B`` scale it by a
thousand, a million, a billion), ``513 MiB``. Not counted:

* anything inside inline code, a fenced code block, LaTeX (``$...$``, ``$$...$$``), an
  HTML tag or comment, a link's address or a bare URL;
* digits that are part of a name: glued to a letter or joined to one by a hyphen
  (``fp32``, ``SmolLM2-135M``, ``Qwen2.5-0.5B``, ``2nd``) and bit widths naming a data type
  (``8-bit``, ``4-bit``);
* chapter and exercise numbers: at the start of a heading (``# 02 ·``, ``### 1. Fewer
  steps``) and after "chapter(s)" or "exercise(s)" (``chapter 05``, ``chapters 02-05``,
  ``exercise 1``);
* ordinals: a list item's or exercise's marker at the start of a line (``1.``, ``2)``,
  ``**3.**``) and ``Step 3``;
* citations: a year next to an author (``Hu et al., 2021``, ``Dettmers (2023)``) and arXiv
  ids (``arXiv:2305.14314``).

**Inputs.** A number the chapter chose (a setting, a paper's worked example) is not an
output. Wrap it in ``<span class="input">...</span>``: HTML that Markdown renders as its
plain text (Jupyter, GitHub and nbviewer show no trace of the tag), and everything inside it
is exempt. Example: ``a learning rate of <span class="input">2e-5</span>``.

**When an output shows a number (the rule).** The outputs are every code cell's stream
text and its ``text/plain``, ``text/markdown`` and ``text/html`` data (tags stripped). A
prose number is shown when some number in them, rounded to the prose number's precision,
equals it; that is, ``|output - prose| <= half a unit in the prose's last written digit``:

* ``0.77`` is shown by ``0.766`` or ``0.7704``; ``513`` by ``513.1``; ``22.9`` is *not*
  shown by ``23`` (the output is coarser than the claim);
* the precision of ``1e-6`` is its mantissa's last digit (so ``1e-6`` matches
  ``0.000001`` and ``1e-06``; ``2.5e-5`` needs ``2.45e-5`` .. ``2.55e-5``);
* a scale letter scales the precision too: ``1.5M`` is shown by ``1,544,128``; output
  numbers with a scale letter (``134.5M``) count both scaled and as written;
* a percentage is shown by the same number (``22.9%`` by ``22.9`` or ``22.9%``) or by a
  fraction a hundred times smaller (``22.9%`` by ``0.2292``);
* signs are ignored (``fell by 20%`` is shown by ``-20.00%``); thousands separators are
  ignored (``3,000`` is ``3000``);
* a version or an ISO date (``2.13.0``, ``2024-03-15``) must appear verbatim.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable

INPUT_SPAN = re.compile(r"<span\s+class=[\"']input[\"']\s*>(.*?)</span>", re.S | re.I)
"""The markup of an input number: ``<span class="input">150</span>``."""

# ---------------------------------------------------------------------------------------------
# What is blanked out of the markdown before numbers are read (each match becomes spaces, so
# the positions of what is left still point into the cell's text).
_FENCED = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.S | re.M)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_INLINE_CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
_DISPLAY_MATH = re.compile(r"\$\$.+?\$\$", re.S)
_INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)[^$\n]+?(?<!\\)\$")
_LINK_TARGET = re.compile(r"\]\([^)\s]*(?:\s+\"[^\"]*\")?\)")
_URL = re.compile(r"(?:https?://|www\.)[^\s)>\]]+|<https?://[^>]+>")
_TAG = re.compile(r"</?[A-Za-z][^<>\n]*>")
_ARXIV = re.compile(r"\barxiv[:\s/]*(?:abs/)?\d{4}\.\d{4,5}(?:v\d+)?", re.I)
_YEAR = r"((?:19|20)\d\d)[a-z]?(?![\w.,]\d)"
_CITATION_YEAR = re.compile(
    r"(?:\bet\s+al\.?,?\s*\(?|\b[A-Z][\w'-]+(?:\s+(?:and|&)\s+[A-Z][\w'-]+)?(?:,\s*|\s*\())" + _YEAR)
_HEADING_NUMBER = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(\d+)", re.M)
_LIST_MARKER = re.compile(r"^[ \t]*(?:[*_]{1,2})?(\d+)[.)](?:[*_]{1,2})?(?=[ \t])", re.M)  # 1. / 2) / **3.**
_STEP_ORDINAL = re.compile(r"\bStep[ \t]+(\d+)\b")
_CHAPTER = re.compile(r"\b(?:[Cc]hapters?|[Ee]xercises?)[ \t]+(\d+(?:[ \t]*(?:[-–—,&]|and|or|to)[ \t]*\d+)*)")
_BIT_WIDTH = re.compile(r"(?<![\w.])\d+-bits?\b")
_NAME = re.compile(r"(?<![\w.-])[A-Za-z][\w.]*(?:-[\w.]+)+")  # SmolLM2-135M, Llama-3-8B, Qwen2.5-0.5B
_TIMES = re.compile(r"(?<=\d)[x×](?=\d)")  # 4x64: two numbers

_BLANK_WHOLE = (_FENCED, _COMMENT, _INLINE_CODE, _DISPLAY_MATH, _INLINE_MATH, _LINK_TARGET, _URL, _ARXIV, _TAG,
                _BIT_WIDTH, _NAME)
_BLANK_GROUP = (_CITATION_YEAR, _HEADING_NUMBER, _LIST_MARKER, _STEP_ORDINAL, _CHAPTER)

# ---------------------------------------------------------------------------------------------
_LITERAL = r"\d{4}-\d{2}-\d{2}|\d+(?:\.\d+){2,}"
_DECIMAL = r"(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d+)(?:\.\d+)?|\.\d+"
_UNITS = r"ms|min|s|h|KiB|MiB|GiB|TiB|KB|MB|GB|TB|GHz"
PROSE_NUMBER = re.compile(
    rf"(?<![\w.])"
    rf"(?:(?P<literal>{_LITERAL})|(?P<number>{_DECIMAL})(?:[eE](?P<exp>[-+−]?\d+))?"
    rf"(?:(?P<percent>%)|(?P<times>[x×])|(?P<unit>{_UNITS})|(?P<scale>[kKMB]))?)"
    rf"(?P<tail>[A-Za-z_\d]*)")
"""A number in prose; a non-empty ``tail`` means the digits belong to a name and are skipped."""

OUTPUT_NUMBER = re.compile(
    rf"(?<![\d.])(?P<number>{_DECIMAL})(?:[eE](?P<exp>[-+−]?\d+))?(?:(?P<scale>[kKMB])(?![A-Za-z]))?")
"""A number in an output: no boundary needed on the left (``r=8``, ``4x64``, ``steps=80``)."""

_SCALES = {"k": 3, "K": 3, "M": 6, "B": 9}


@dataclass(frozen=True)
class ProseNumber:
    """One number a markdown cell states."""

    text: str
    """As written (``22.9%``, ``1e-6``, ``135M``)."""
    value: Decimal | None
    """Its value (absolute, scale applied, ``%`` not applied); None for a literal."""
    tolerance: Decimal
    """Half a unit in its last written digit: how far an output may be and still round to it."""
    percent: bool = False
    literal: bool = False
    """A version or an ISO date: matched verbatim."""
    cell: int = -1
    """Index of its cell in the notebook."""
    context: str = ""
    """The line around it, for a readable failure message."""

    def __str__(self) -> str:
        return f"cell {self.cell}: {self.text!r} in {self.context!r}"


def _decimal(number: str, exp: str | None, scale: str | None) -> tuple[Decimal, Decimal]:
    """Value and tolerance of a written number."""
    digits = number.replace(",", "")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    power = int(exp.replace("−", "-")) if exp else 0
    power += _SCALES.get(scale or "", 0)
    value = Decimal(digits).scaleb(power)
    tolerance = Decimal(5).scaleb(power - decimals - 1)
    return abs(value), tolerance


def _blank(text: str, span: tuple[int, int]) -> str:
    start, end = span
    return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]


def prose_text(markdown: str) -> str:
    """The markdown with everything that is not a claim blanked out (same length, same lines):
    input spans, code, math, tags, addresses, names' digits, chapter numbers, ordinals,
    citations. See the module docstring for the list."""
    text = markdown
    for match in list(INPUT_SPAN.finditer(text)):
        text = _blank(text, match.span())
    for pattern in _BLANK_WHOLE:
        for match in list(pattern.finditer(text)):
            text = _blank(text, match.span())
    for pattern in _BLANK_GROUP:
        for match in list(pattern.finditer(text)):
            text = _blank(text, match.span(1))
    return _TIMES.sub(" ", text)


def prose_numbers(markdown: str, cell: int = -1) -> list[ProseNumber]:
    """The numbers one markdown text states, in order (see the module docstring)."""
    text = prose_text(markdown)
    found = []
    for match in PROSE_NUMBER.finditer(text):
        if match["tail"]:
            continue  # digits of a name: fp32 is not preceded by a letter, but 2nd, 4bit, 3D are followed by one
        start, end = match.span()
        line_start = markdown.rfind("\n", 0, start) + 1
        line_end = markdown.find("\n", end)
        context = markdown[line_start: line_end if line_end >= 0 else len(markdown)].strip()
        written = markdown[start:end]
        if match["literal"]:
            found.append(ProseNumber(written, None, Decimal(0), literal=True, cell=cell, context=context))
            continue
        value, tolerance = _decimal(match["number"], match["exp"], match["scale"])
        found.append(ProseNumber(written, value, tolerance, percent=bool(match["percent"]), cell=cell, context=context))
    return found


def _text(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def output_text(nb: dict[str, Any]) -> str:
    """All text a notebook's outputs show: streams and text/plain, text/markdown, text/html
    data (tags stripped, entities decoded), one output after another."""
    parts = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(_text(output.get("text", "")))
                continue
            data = output.get("data", {})
            for mime in ("text/plain", "text/markdown"):
                if mime in data:
                    parts.append(_text(data[mime]))
            if "text/html" in data:
                parts.append(html.unescape(re.sub(r"<[^>]+>", " ", _text(data["text/html"]))))
    return "\n".join(parts)


def output_values(text: str) -> list[Decimal]:
    """Every number in output text, as absolute values: one with a scale letter counts as
    written and scaled; one with thousands separators also counts as its separate groups."""
    values = []
    for match in OUTPUT_NUMBER.finditer(text):
        number, exp, scale = match["number"], match["exp"], match["scale"]
        values.append(_decimal(number, exp, None)[0])
        if scale:
            values.append(_decimal(number, exp, scale)[0])
        if "," in number:  # "[43,429]" may be a list, not 43429
            values += [Decimal(part) for part in number.split(".")[0].split(",")]
    return values


def is_shown(number: ProseNumber, output: str, values: Iterable[Decimal] | None = None) -> bool:
    """Whether the output text (or its parsed ``values``) shows ``number`` by the module's rule."""
    if number.literal:
        return number.text in output
    assert number.value is not None
    candidates = output_values(output) if values is None else values
    for x in candidates:
        if abs(x - number.value) <= number.tolerance:
            return True
        if number.percent and abs(x * 100 - number.value) <= number.tolerance:
            return True
    return False


def notebook_numbers(nb: dict[str, Any]) -> list[ProseNumber]:
    """The numbers stated by every markdown cell of ``nb`` (its JSON)."""
    return [n for i, cell in enumerate(nb.get("cells", [])) if cell.get("cell_type") == "markdown"
            for n in prose_numbers(_text(cell.get("source", "")), cell=i)]


def unsupported_numbers(nb: dict[str, Any]) -> list[ProseNumber]:
    """The numbers ``nb``'s markdown states that none of its outputs shows and no input span marks."""
    output = output_text(nb)
    values = output_values(output)
    return [n for n in notebook_numbers(nb) if not is_shown(n, output, values)]
