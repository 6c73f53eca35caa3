"""The chapter takeaways: the published table the chapters cite, and the Markdown it is laid out in."""
from __future__ import annotations

import re

import pytest

from ftlab.ui.published import KNOBS, PUBLISHED, published, show_takeaway, takeaway

# What the knob chapters ask for (02 schedules, 03 weight decay, 04 NEFTune, 05 accumulation, 06 LoRA, 07 batch).
CHAPTER_KNOBS = ["lr_lora", "lr_full", "weight_decay", "neftune_alpha", "warmup_fraction", "lr_schedule",
                 "lora_rank", "batch_size"]


def _table_rows(markdown: str, header_start: str) -> list[list[str]]:
    """The body rows of the table whose header row starts with ``header_start``, split on
    unescaped ``|`` the way a Markdown renderer splits them."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header_start}"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


@pytest.mark.parametrize("knob", CHAPTER_KNOBS)
def test_every_knob_a_chapter_asks_for_has_a_published_value(knob):
    assert knob in KNOBS
    assert published([knob]), f"no published value for {knob}"


def test_lora_and_full_fine_tuning_rates_are_both_there_and_differ():
    # The lesson is that LoRA runs at roughly 10x the full fine-tuning rate; both sides must be cited.
    assert {e.value for e in published(["lr_lora"])}.isdisjoint(e.value for e in published(["lr_full"]))


def test_every_entry_is_cited_with_an_https_url_and_a_place():
    for entry in PUBLISHED:
        assert entry.knob in KNOBS
        assert re.fullmatch(r"https://\S+", entry.url), entry
        assert re.search(r"(19|20)\d\d", entry.citation), entry  # authors and year
        assert entry.value.strip() and entry.setting.strip() and entry.where.strip(), entry


def test_unknown_knob_is_rejected_naming_the_known_ones():
    with pytest.raises(ValueError) as err:
        takeaway(["a"], ["b"], ["lr_lora", "learning_rate"])
    message = str(err.value)
    assert "learning_rate" in message
    assert all(k in message for k in KNOBS)


def test_a_bare_string_is_not_taken_for_a_list_of_cells():
    with pytest.raises(TypeError):
        takeaway("warmup matters", ["b"])
    with pytest.raises(TypeError):
        published("lr_lora")


def test_empty_takeaway_is_rejected():
    with pytest.raises(ValueError):
        takeaway([], [])


def test_unequal_columns_are_padded_not_dropped():
    transfers = ["warmup protects Adam's first steps", "AdamW states cost 8 bytes a parameter", "third"]
    tiny = ["best rate 3e-3 on the tiny base"]
    rows = _table_rows(takeaway(transfers, tiny), "What transfers")
    assert rows == [[transfers[0], tiny[0]], [transfers[1], ""], [transfers[2], ""]]
    rows = _table_rows(takeaway(tiny, transfers), "What transfers")
    assert [r[1] for r in rows] == transfers and [r[0] for r in rows] == [tiny[0], "", ""]


def test_pipes_and_newlines_in_cell_text_do_not_break_the_table():
    md = takeaway(["loss | accuracy\nboth fall"], ["a|b"])
    rows = _table_rows(md, "What transfers")
    assert rows == [[r"loss \| accuracy both fall", r"a\|b"]]


def test_published_rows_follow_the_knobs_asked_for_with_links():
    md = takeaway(["x"], ["y"], ["neftune_alpha", "weight_decay", "neftune_alpha"])
    rows = _table_rows(md, "Knob")
    expected = published(["neftune_alpha", "weight_decay"])
    assert len(rows) == len(expected)  # a repeated knob is listed once
    for row, entry in zip(rows, expected):
        assert row[0] == KNOBS[entry.knob]
        assert row[1] == entry.value
        assert f"]({entry.url})" in row[3]


def test_no_knobs_means_no_published_table():
    md = takeaway(["x"], ["y"])
    assert "Published values" not in md


def test_show_takeaway_prints_outside_ipython(capsys, monkeypatch):
    # another test in this process may have started an IPython shell: outside IPython means no shell
    monkeypatch.setattr("ftlab.ui.published.ipython_shell", lambda: None)
    show_takeaway(["x"], ["y"], ["warmup_fraction"])
    assert capsys.readouterr().out == takeaway(["x"], ["y"], ["warmup_fraction"]) + "\n"
