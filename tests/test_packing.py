"""Chapter 07's packing lesson: the layouts hold the same tokens, restarted positions keep
packed examples apart (naive packing does not), and the skewed mix is where padding wastes."""
from __future__ import annotations

import pytest
import torch

from ftlab import DataError, RunConfig, load_data, load_model
from ftlab.setup.data import pack_groups
from ftlab.lessons.packing import LAYOUTS, contamination, first_steps, layout_batches, measure_layout, padding_fraction
from ftlab.setup.skewed_mix import LONG_TASK, SHORT_TASKS, build_skewed_mix, skewed_mix

SEQ = 256
CONFIG = RunConfig(model="tiny-pretrained", lora_r=0, system_prompt="", max_seq_length=SEQ, train_size=160,
                   eval_size=1, exact_match_size=0)


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return load_model(CONFIG)


@pytest.fixture(scope="module")
def finance(model_and_tokenizer):
    return list(load_data(CONFIG, model_and_tokenizer[1]).train)


@pytest.fixture(scope="module")
def skewed(model_and_tokenizer, tmp_path_factory):
    folder = skewed_mix(tmp_path_factory.mktemp("skewed"))
    return list(load_data(CONFIG.replace(dataset=folder), model_and_tokenizer[1]).train)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_restarted_positions_keep_examples_apart_and_naive_packing_does_not(model_and_tokenizer, finance, attention):
    model, _ = model_and_tokenizer
    model.set_attn_implementation(attention)
    model.train()
    try:
        losses = contamination(model, finance[0], finance[1])
    finally:
        model.set_attn_implementation("sdpa")
    assert abs(losses.restarted - losses.alone) < 1e-5
    assert abs(losses.naive - losses.alone) > 1e-2
    # the trap: an all-ones attention mask hides the restarts, and B sees A again
    assert abs(losses.restarted_with_mask - losses.alone) > 1e-2
    assert model.training  # left in the mode it was found in


def _examples_of(batch, layout):
    """The token lists of the examples a batch holds, read back from the tensors."""
    out = []
    for r, row in enumerate(batch.inputs["input_ids"].tolist()):
        if layout == "padding":
            out.append(row[:int(batch.inputs["attention_mask"][r].sum())])
            continue
        positions = batch.inputs["position_ids"][r].tolist()
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(row)]
        out.extend(row[a:b] for a, b in zip(starts, starts[1:]))
    return out


def test_every_layout_holds_each_example_once_with_the_same_tokens(model_and_tokenizer, finance):
    pad = model_and_tokenizer[1].pad_token_id
    batches = {layout: layout_batches(finance, layout, 8, SEQ, pad) for layout in LAYOUTS}
    for layout, bs in batches.items():
        assert sum(b.examples for b in bs) == len(finance)
        assert sum(b.real_tokens for b in bs) == sum(len(ex["input_ids"]) for ex in finance)
        assert sum(b.supervised_tokens for b in bs) == sum(sum(t != -100 for t in ex["labels"]) for ex in finance)
    expected = [ex["input_ids"] for ex in finance]
    assert [e for b in batches["padding"] for e in _examples_of(b, "padding")] == expected
    packed = [e for b in batches["packed"] for e in _examples_of(b, "packed")]
    assert [e for e in packed if e in expected] == expected  # in order; the rest are the padding tails
    assert all(set(e) == {pad} for e in packed if e not in expected)
    assert "position_ids" not in batches["naive"][0].inputs and "attention_mask" not in batches["packed"][0].inputs
    assert torch.equal(batches["naive"][0].inputs["input_ids"], batches["packed"][0].inputs["input_ids"])


def test_pack_groups_fill_rows_greedily_in_order():
    assert pack_groups([3, 2, 4, 6, 1], 6) == [[0, 1], [2], [3], [4]]
    assert pack_groups([], 6) == []


def test_padding_and_packing_compute_the_same_loss_and_naive_does_not(model_and_tokenizer, finance):
    model, tok = model_and_tokenizer
    results = {layout: measure_layout(model, tok, finance, layout, batch_size=1, seq_len=SEQ, steps=1)
               for layout in LAYOUTS}
    chosen = first_steps(finance, 1, 1, SEQ)
    assert all(r.examples == len(chosen) and r.real_tokens == results["padding"].real_tokens for r in results.values())
    assert results["padding"].batches == len(chosen) > 1 and results["packed"].batches == 1
    assert abs(results["padding"].loss_per_token - results["packed"].loss_per_token) < 1e-5
    assert abs(results["naive"].loss_per_token - results["packed"].loss_per_token) > 1e-3
    for r in results.values():
        assert r.tokens_per_second > 0 and r.activation_bytes > 0 and 0 <= r.padding_fraction < 1
    assert results["packed"].padding_fraction == results["naive"].padding_fraction


def test_first_steps_picks_what_the_packed_layout_fits(finance):
    chosen = first_steps(finance, 2, 4, SEQ)
    rows = pack_groups([len(ex["input_ids"]) for ex in finance], SEQ)
    assert len(chosen) == sum(len(g) for g in rows[:8])


def test_the_skewed_mix_pads_much_more_than_finance_and_packing_removes_it(model_and_tokenizer, finance, skewed):
    pad = model_and_tokenizer[1].pad_token_id
    padded = {name: padding_fraction(layout_batches(data, "padding", 8, SEQ, pad))
              for name, data in (("finance", finance), ("skewed", skewed))}
    assert padded["skewed"] > padded["finance"] + 0.1, padded
    assert padding_fraction(layout_batches(skewed, "packed", 8, SEQ, pad)) < padded["skewed"] - 0.1
    lengths = [len(ex["input_ids"]) for ex in skewed]
    assert max(lengths) <= SEQ and max(lengths) > 2.5 * min(lengths)


def test_the_skewed_mix_is_deterministic_and_keeps_held_out_questions_out(tmp_path):
    mix = build_skewed_mix()
    assert mix == build_skewed_mix()
    train_prompts = {r["prompt"] for r in mix["train"]}
    for split in ("validation", "test"):
        assert not train_prompts & {r["prompt"] for r in mix[split]}
    tasks = [r["task"] for r in mix["train"]]
    assert 2.5 < sum(t in SHORT_TASKS for t in tasks) / tasks.count(LONG_TASK) < 3.5
    folder = skewed_mix(tmp_path)
    written = (tmp_path / "train.jsonl").stat().st_mtime_ns
    assert skewed_mix(tmp_path) == folder and (tmp_path / "train.jsonl").stat().st_mtime_ns == written


def test_bad_arguments_name_the_field_and_the_fix(model_and_tokenizer, finance):
    pad = model_and_tokenizer[1].pad_token_id
    with pytest.raises(DataError, match="layout='packing' is not a layout; use one of padding, packed, naive"):
        layout_batches(finance, "packing", 8, SEQ, pad)
    with pytest.raises(DataError, match=r"seq_len=32 is shorter than the longest example .* raise seq_len"):
        layout_batches(finance, "packed", 8, 32, pad)
    with pytest.raises(DataError, match="already packed rows; load them with RunConfig.packing=False"):
        layout_batches([{"input_ids": [1], "labels": [1], "position_ids": [0]}], "padding", 8, SEQ, pad)
    with pytest.raises(DataError, match="steps=0 must be at least 1"):
        first_steps(finance, 0, 8, SEQ)
