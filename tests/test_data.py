import json
import time

import pytest
import torch

from ftlab import DataError, RunConfig, load_data, load_tokenizer
from ftlab.setup import sources
from ftlab.setup.data import Collator, encode_example, pack_examples, read_jsonl
from ftlab.setup.models import load_model


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(RunConfig(model="tiny"))


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_malformed_json_names_file_and_line(tmp_path):
    good = json.dumps({"prompt": "a", "response": "b"})
    path = _write(tmp_path / "bad.jsonl", [good, good, '{"prompt": "a", "response": }'])
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not valid JSON"):
        read_jsonl(path)


def test_missing_field_names_line_and_field(tmp_path):
    path = _write(tmp_path / "miss.jsonl", [json.dumps({"prompt": "a", "response": "b"}), json.dumps({"prompt": "a"})])
    with pytest.raises(DataError, match=r"miss\.jsonl:2: missing field 'response'"):
        read_jsonl(path)


def test_non_object_and_empty_field(tmp_path):
    with pytest.raises(DataError, match=r":1: expected a JSON object"):
        read_jsonl(_write(tmp_path / "a.jsonl", ["[1, 2]"]))
    with pytest.raises(DataError, match=r":1: field 'response' must be a non-empty string"):
        read_jsonl(_write(tmp_path / "b.jsonl", [json.dumps({"prompt": "a", "response": ""})]))


def test_errors_surface_through_load_data(tmp_path, tok):
    path = _write(tmp_path / "x.jsonl", [json.dumps({"q": "a", "a": "b"})] * 30 + ["not json"])
    with pytest.raises(DataError, match=r"x\.jsonl:31"):
        load_data(RunConfig(model="tiny", dataset=str(path), prompt_field="q", response_field="a"), tok)
    with pytest.raises(DataError, match="file not found"):
        load_data(RunConfig(model="tiny", dataset=str(tmp_path / "nope.jsonl")), tok)


def test_field_mapping(tmp_path, tok):
    path = _write(tmp_path / "m.jsonl", [json.dumps({"q": f"question {i}", "a": f"answer {i}"}) for i in range(40)])
    data = load_data(RunConfig(model="tiny", dataset=str(path), prompt_field="q", response_field="a",
                               system_prompt="", eval_size=4, exact_match_size=4), tok)
    assert len(data.train) + len(data.raw["validation"]) + len(data.raw["test"]) == 40
    assert data.test[0]["prompt"].startswith("question") and data.test[0]["response"].startswith("answer")


def test_prompt_tokens_are_masked_exactly(tok):
    ex = encode_example(tok, "ab", "cd", system_prompt="", max_seq_length=64)
    text = tok.decode(ex["input_ids"])
    assert text == "<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\ncd<|im_end|>\n"
    supervised = [t for t in ex["labels"] if t != -100]
    # the model learns the answer, the end-of-turn token and the newline after it: nothing else
    assert supervised == [ord("c"), ord("d"), tok.eos_token_id, ord("\n")]
    n_prompt = ex["labels"].index(ord("c"))
    assert all(t == -100 for t in ex["labels"][:n_prompt])
    assert tok.decode(ex["input_ids"][:n_prompt]).endswith("<|im_start|>assistant\n")


def test_too_long_prompt_is_dropped_and_response_truncated(tok):
    assert encode_example(tok, "x" * 100, "y", system_prompt="", max_seq_length=32) is None
    ex = encode_example(tok, "ab", "y" * 100, system_prompt="", max_seq_length=32)
    assert len(ex["input_ids"]) == 32 and len(ex["labels"]) == 32


def test_packing_layout():
    a = {"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}
    b = {"input_ids": [4, 5], "labels": [-100, 5]}
    c = {"input_ids": [6, 7, 8, 9], "labels": [-100, -100, 8, 9]}
    rows = pack_examples([a, b, c], max_seq_length=6, pad_token_id=0)
    # best-fit decreasing: c (longest) opens a row, a does not fit beside it, b fills c's row
    assert rows == [{"input_ids": [6, 7, 8, 9, 4, 5], "labels": [-100, -100, 8, 9, -100, 5],
                     "position_ids": [0, 1, 2, 3, 0, 1]},
                    {"input_ids": [1, 2, 3, 0, 0, 0], "labels": [-100, 2, 3, -100, -100, -100],
                     "position_ids": [0, 1, 2, 0, 1, 2]}]


def test_packed_examples_do_not_attend_to_each_other(tok):
    model, _ = load_model(RunConfig(model="tiny", lora_r=0))
    model.eval()
    first = encode_example(tok, "12 plus 3?", "15", "", 64)
    second = encode_example(tok, "4 plus 4?", "8", "", 64)
    row = pack_examples([first, second], 128, tok.pad_token_id)[0]
    batch = Collator(tok.pad_token_id)([row])
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        alone = model(input_ids=torch.tensor([second["input_ids"]])).logits[0]
    n1, n2 = len(first["input_ids"]), len(second["input_ids"])
    torch.testing.assert_close(packed[n1:n1 + n2], alone, atol=1e-5, rtol=1e-5)
    # and without position_ids the second example *would* see the first: the check can fail
    with torch.no_grad():
        leaky = model(input_ids=batch["input_ids"]).logits[0]
    assert not torch.allclose(leaky[n1:n1 + n2], alone, atol=1e-3)


def test_collator_pads_right_with_masked_labels(tok):
    batch = Collator(pad_token_id=7)([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]},
                                      {"input_ids": [4], "labels": [4]}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 7, 7]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_data_fingerprint_follows_the_files_bytes(tmp_path):
    from ftlab.setup.data import data_fingerprint
    one = tmp_path / "one.jsonl"
    one.write_text('{"prompt": "a", "response": "b"}\n')
    config = RunConfig(dataset=str(one))
    before = data_fingerprint(config)
    assert before == data_fingerprint(config)
    one.write_text('{"prompt": "a", "response": "c"}\n')
    assert data_fingerprint(config) != before
    folder = tmp_path / "splits"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    split_config = RunConfig(dataset=str(folder))
    before = data_fingerprint(split_config)
    (folder / "validation.jsonl").write_text('{"prompt": "x", "response": "y"}\n')
    assert data_fingerprint(split_config) != before  # a new split file changes what a run sees
    assert len(data_fingerprint(RunConfig(dataset="finance"))) == 16
    assert data_fingerprint(RunConfig(dataset="someone/hub-dataset")) is None


# --- encodings, file types and sources that are not there ------------------------------------


def test_non_utf8_line_names_file_line_and_column(tmp_path):
    good = json.dumps({"prompt": "a", "response": "b"})
    path = tmp_path / "latin.jsonl"
    path.write_bytes(f"{good}\n{good}\n".encode() + '{"prompt": "Zürich?", "response": "b"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.jsonl:3: not UTF-8 text \(byte 0xfc at column 14\); save the file as UTF-8"):
        read_jsonl(path)


def test_a_byte_order_mark_is_read_past(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "a", "response": "b"}).encode() + b"\n")
    assert read_jsonl(path) == [{"prompt": "a", "response": "b"}]


def test_csv_and_json_files_are_checked_before_datasets_reads_them(tmp_path, tok):
    rows = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(30)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    (tmp_path / "rows.csv").write_text("prompt,response\n" + "".join(f"q{i},a{i}\n" for i in range(30)))
    for name in ("rows.json", "rows.csv"):  # good files still load
        data = load_data(RunConfig(model="tiny", dataset=str(tmp_path / name), system_prompt="", eval_size=2,
                                   exact_match_size=2), tok)
        assert len(data.raw["train"]) + len(data.raw["validation"]) + len(data.raw["test"]) == 30
    (tmp_path / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in rows))  # JSON Lines in a .json
    assert len(load_data(RunConfig(model="tiny", dataset=str(tmp_path / "lines.json")), tok).raw["test"]) == 3
    (tmp_path / "bad.csv").write_bytes(b"prompt,response\nq,a\nq,\xe9t\xe9\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: not UTF-8"):
        load_data(RunConfig(model="tiny", dataset=str(tmp_path / "bad.csv")), tok)
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(DataError, match="a .txt file is not a data set ftlab reads"):
        load_data(RunConfig(model="tiny", dataset=str(tmp_path / "notes.txt")), tok)


def test_hub_data_set_without_network_fails_at_once(monkeypatch, tok):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sources, "hub_reachable", lambda *a, **k: False)  # no host is contacted
    started = time.perf_counter()
    with pytest.raises(DataError, match="does not answer from this machine"):
        load_data(RunConfig(model="tiny", dataset="someone/some-hub-dataset"), tok)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="HF_HUB_OFFLINE=1 is set"):
        load_data(RunConfig(model="tiny", dataset="someone/some-hub-dataset"), tok)
    assert time.perf_counter() - started < 5


def test_tiny_defaults_fit_every_finance_example(tok):
    # the byte-level preset with the default system prompt: 146-262 tokens per example
    data = load_data(RunConfig(model="tiny", eval_size=4, exact_match_size=1), tok)
    assert data.info["train_examples"] == 3000 and data.info["dropped_too_long"] == 0


def test_too_short_max_seq_length_says_how_long_the_prompts_are(tok):
    with pytest.raises(DataError, match=r"max_seq_length=128: the shortest prompt .* is 1\d\d tokens of model 'tiny'"):
        load_data(RunConfig(model="tiny", max_seq_length=128, train_size=50, eval_size=4), tok)


def test_a_second_load_reuses_the_encoded_examples_and_gives_the_same_rows(tok, monkeypatch):
    """Encoding is memoised per process (a chapter loads the same split for every run): the
    second load encodes nothing and yields the same rows; a different length or system prompt
    is a different key."""
    from ftlab.setup import data as data_module

    config = RunConfig(model="tiny", train_size=40, eval_size=8, exact_match_size=4, system_prompt="")
    data_module._ENCODED.clear()
    first = load_data(config, tok)
    calls = []
    real = data_module.encode_example
    monkeypatch.setattr(data_module, "encode_example", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = load_data(config, tok)
    assert calls == [] and list(again.train) == list(first.train) and list(again.validation) == list(first.validation)
    shorter = load_data(config.replace(max_seq_length=160), tok)
    assert len(calls) == 48 and max(len(r["input_ids"]) for r in shorter.train) <= 160
    load_data(config.replace(system_prompt="Be brief."), tok)
    assert len(calls) == 96


def test_a_data_file_edited_between_runs_is_read_again(tmp_path, tok):
    """Raw splits are kept per process by the files' bytes: an edit is seen at once."""
    path = _write(tmp_path / "d.jsonl", [json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) for i in range(30)])
    config = RunConfig(model="tiny", dataset=str(path), eval_size=4, exact_match_size=4, system_prompt="")
    first = load_data(config, tok)
    assert load_data(config, tok).raw is first.raw  # read once
    _write(path, [json.dumps({"prompt": f"new{i}", "response": f"b{i}"}) for i in range(30)])
    edited = load_data(config, tok)
    assert edited.raw is not first.raw
    assert all(r["prompt"].startswith("new") for split in edited.raw.values() for r in split)


@pytest.mark.parametrize("profile", ["ci", "cpu", "gpu"])
def test_every_profile_keeps_every_finance_example_of_smollm2_whole(profile):
    """The profile's max_seq_length cuts no answer of the shipped data (at 96 it cut 258 of the
    3000 training examples, 157 inside the answer, without a warning)."""
    from ftlab.config.profiles import base_config
    from ftlab.setup.data import load_raw
    config = base_config(profile, model="smollm2-135m")
    tok = load_tokenizer(config)
    raw = load_raw(config)
    for split in ("train", "validation", "test"):
        longest = max(len(encode_example(tok, r["prompt"], r["response"], config.system_prompt, 10**9)["input_ids"])
                      for r in raw[split])
        assert longest <= config.max_seq_length, (profile, split, longest)
