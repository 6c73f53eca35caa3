"""Chapter 07b's packing lesson: the layouts hold the same tokens, restarted positions keep
packed examples apart (naive packing does not), and the skewed mix is where padding wastes."""
from __future__ import annotations

import random

import pytest
import torch

from ftlab import DataError, RunConfig, load_data, load_model
from ftlab.runs.cache import run_key
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
    assert sorted(e for e in packed if e in expected) == sorted(expected)  # the rest are the padding tails
    assert all(set(e) == {pad} for e in packed if e not in expected)
    assert "position_ids" not in batches["naive"][0].inputs and "attention_mask" not in batches["packed"][0].inputs
    assert torch.equal(batches["naive"][0].inputs["input_ids"], batches["packed"][0].inputs["input_ids"])


def next_fit(lengths, max_seq_length):
    """The packer before best-fit decreasing: fill the current row, open the next when an example does not fit."""
    groups, used = [], 0
    for index, n in enumerate(lengths):
        if groups and used + n <= max_seq_length:
            groups[-1].append(index)
            used += n
        else:
            groups.append([index])
            used = n
    return groups


def best_fit_decreasing(lengths, max_seq_length):
    """The definition, written the slow way: scan every row for the tightest fit."""
    groups, room = [], []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fits = [r for r in range(len(groups)) if room[r] >= lengths[index]]
        if fits:
            row = min(fits, key=lambda r: room[r])  # min keeps the first (earliest-opened) of equally tight rows
        else:
            row = len(groups)
            groups.append([])
            room.append(max_seq_length)
        groups[row].append(index)
        room[row] -= lengths[index]
    return groups


def test_pack_groups_is_best_fit_decreasing_where_next_fit_wastes_a_row():
    # 6 opens a row, 5 a second; 4 goes where it fits tightest (beside 6), then 3 and 2 beside 5
    assert pack_groups([6, 5, 4, 3, 2], 10) == [[0, 2], [1, 3, 4]]
    assert next_fit([6, 5, 4, 3, 2], 10) == [[0], [1, 2], [3, 4]]
    assert pack_groups([3, 2, 4, 6, 1], 6) == [[3], [2, 1], [0, 4]]  # next-fit: 4 rows
    assert pack_groups([3, 3, 3, 3], 6) == [[0, 1], [2, 3]]  # equal lengths keep their order
    assert pack_groups([], 6) == []


@pytest.mark.parametrize("seed", range(20))
def test_pack_groups_matches_the_definition_and_keeps_every_example_whole_once(seed):
    rng = random.Random(seed)
    cap = rng.choice([16, 64, 256])
    lengths = [rng.randint(1, cap) for _ in range(rng.randint(1, 120))]
    rows = pack_groups(lengths, cap)
    assert rows == best_fit_decreasing(lengths, cap)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= cap for row in rows)


def test_best_fit_decreasing_packs_the_finance_data_tighter_than_next_fit(finance):
    lengths = [len(ex["input_ids"]) for ex in finance]
    rows, old = pack_groups(lengths, SEQ), next_fit(lengths, SEQ)
    assert sorted(i for row in rows for i in row) == list(range(len(finance)))
    assert max(sum(lengths[i] for i in row) for row in rows) <= SEQ

    def padding(groups):
        return 1 - sum(lengths) / (len(groups) * SEQ)
    assert len(rows) < len(old) and padding(rows) < 0.1 < 0.2 < padding(old), (len(rows), len(old))


def test_a_packed_run_gets_a_new_key_and_an_unpacked_run_keeps_its_own():
    # keys computed before best-fit decreasing replaced next-fit: an unpacked run's rows did
    # not change, so its key must not (every cached run stays valid); a packed run's did
    assert run_key(RunConfig(model="tiny"), "data", "model") == "e66114e9e059ec35"
    assert run_key(RunConfig(model="tiny", max_seq_length=256), "data", "model") == "692e90a99a0fdefc"
    packed = [(RunConfig(model="tiny", packing=True), "b3a8fda941e198d1"),
              (RunConfig(model="tiny", packing=True, max_seq_length=256), "89106a095d90e4ee")]
    for config, next_fit_key in packed:
        assert run_key(config, "data", "model") != next_fit_key
    assert run_key(RunConfig(model="tiny", packing=True), "data", "model") == "08513dcc1e9b9d16"


def test_train_packs_its_rows_with_pack_groups(model_and_tokenizer, finance):
    rows = list(load_data(CONFIG.replace(packing=True), model_and_tokenizer[1]).train)
    assert len(rows) == len(pack_groups([len(ex["input_ids"]) for ex in finance], SEQ))
    assert all(len(r["input_ids"]) == len(r["position_ids"]) == SEQ for r in rows)


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


def test_first_steps_picks_the_first_examples_the_packed_layout_fits(finance):
    chosen = first_steps(finance, 2, 4, SEQ)
    n = len(chosen)
    assert [ex["input_ids"] for ex in chosen] == [list(ex["input_ids"]) for ex in finance[:n]]
    lengths = [len(ex["input_ids"]) for ex in finance]
    assert len(pack_groups(lengths[:n], SEQ)) <= 8 < len(pack_groups(lengths[:n + 1], SEQ))


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


def test_measure_layouts_interleaves_and_explains_the_speedup_by_slot_costs(model_and_tokenizer, finance):
    from ftlab.lessons.packing import measure_layouts, predicted_speedup, row_length_cost, slot_cost_ratio
    model, tok = model_and_tokenizer
    ms, timings = measure_layouts(model, tok, finance, batch_size=2, seq_len=SEQ, steps=1, rounds=3)
    assert set(ms) == set(LAYOUTS) and all(len(timings.seconds[lay]) == 3 for lay in LAYOUTS)
    pad, packed = ms["padding"], ms["packed"]
    assert pad.real_tokens == packed.real_tokens and packed.row_length == SEQ
    assert pad.slots == sum(1 for _ in range(pad.rows)) * pad.row_length
    assert pad.loss_per_token == pytest.approx(packed.loss_per_token, abs=1e-5)
    # the identity the chapter prints: measured speed-up = prediction x (padded slot cost / packed slot cost)
    measured = packed.tokens_per_second / pad.tokens_per_second
    assert measured == pytest.approx(predicted_speedup(pad, packed) * pad.seconds_per_slot / packed.seconds_per_slot)
    assert predicted_speedup(pad, packed) == pytest.approx((1 - packed.padding_fraction) / (1 - pad.padding_fraction))
    rows = row_length_cost(model, (64, 128), slots=256, rounds=3)
    assert len(slot_cost_ratio(rows, 128, 64, 256)) == 3
