"""The tiny-pretrained base: its corpus is exact and disjoint from the fine-tuning data, and
the base really is pretrained (its step-0 loss on the finance validation split is far below
a random model's)."""
import json
import math
import re
from decimal import Decimal
from pathlib import Path

import pytest

from ftlab import RunConfig
from ftlab import train
from ftlab.setup.data import SPLITS, data_dir, read_jsonl
from ftlab.setup.presets import byte_tokenizer, resolve_model
from ftlab.setup.pretrain import corpus, document_text


@pytest.fixture(scope="module")
def text() -> str:
    tokenizer = byte_tokenizer()
    return "\n".join(document_text(doc, tokenizer) for doc in corpus())


def test_corpus_is_deterministic_and_half_chat():
    docs = corpus(50)
    assert docs == corpus(50) and corpus(50, seed=8) != docs
    chats = [d for d in docs if isinstance(d, list)]
    assert len(chats) == 25 and all([m["role"] for m in d] == ["user", "assistant"] for d in chats)


def test_corpus_shares_no_example_with_the_fine_tuning_splits(text):
    for split in SPLITS:
        for ex in read_jsonl(data_dir() / "finance" / f"{split}.jsonl", ("prompt", "response")):
            for line in ex["prompt"].splitlines():
                assert line not in text, (split, line)


def test_corpus_figures_are_exact(text):
    exchanges = re.findall(r"At ([\d.]+) (\w+) per (\w+), ([\d.]+) \3 came to ([\d.]+) \2\.", text)
    discounts = re.findall(r"marked ([\d.]+); with (\d+)% off they sold for ([\d.]+)\.", text)
    assert len(exchanges) > 100 and len(discounts) > 100
    cent = Decimal("0.01")
    for rate, _, _, units, result in exchanges:
        assert (Decimal(units) * Decimal(rate)).quantize(cent, rounding="ROUND_HALF_UP") == Decimal(result)
    for price, pct, result in discounts:
        expected = Decimal(price) * (100 - int(pct)) / 100
        assert expected.quantize(cent, rounding="ROUND_HALF_UP") == Decimal(result)


def _step0_loss(model: str) -> float:
    config = RunConfig(model=model, lora_r=0, max_steps=0, system_prompt="", max_seq_length=256,
                       eval_size=64, exact_match_size=0)
    return train(config, save=False, progress=False).metrics["initial_eval_loss"]


def test_base_is_pretrained_well_below_a_random_model():
    uniform = math.log(259)  # 256 bytes + 3 specials
    pretrained, random_init = _step0_loss("tiny-pretrained"), _step0_loss("tiny")
    assert pretrained <= 0.6 * uniform, pretrained
    assert random_init >= 0.9 * uniform, random_init
    report = json.loads((Path(resolve_model("tiny-pretrained")) / "pretrain.json").read_text())
    assert report["final_loss"] < report["first_loss"] / 3 and report["steps"] >= 100


def test_every_machine_fine_tunes_the_shipped_base(tmp_path, monkeypatch):
    """tiny-pretrained resolves to the shipped folder (no pretraining on the learner's
    machine), which the current recipe made; without it, the recipe builds one into the cache."""
    from ftlab.setup import pretrain as recipe
    from ftlab.setup.presets import PRETRAIN_VERSION, shipped_tiny_pretrained
    shipped = shipped_tiny_pretrained()
    assert Path(resolve_model("tiny-pretrained")) == shipped and shipped.name == f"tiny-pretrained-v{PRETRAIN_VERSION}"
    weights = shipped / "model.safetensors"
    assert weights.stat().st_size <= 8 * 2 ** 20
    report = json.loads((shipped / "pretrain.json").read_text())
    assert (report["steps"], report["batch"], report["seq_len"], report["learning_rate"], report["seed"],
            report["documents"]) == (recipe.STEPS, recipe.BATCH, recipe.SEQ_LEN, recipe.LEARNING_RATE, recipe.SEED,
                                     recipe.DOCUMENTS)
    from safetensors import safe_open
    with safe_open(str(weights), "pt") as f:  # safetensors only, and every weight is finite
        assert all(f.get_tensor(k).isfinite().all() for k in f.keys())
    built: list[Path] = []
    monkeypatch.setenv("FTLAB_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("FTLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("ftlab.setup.presets.build_tiny_pretrained", lambda folder: built.append(folder)
                        or (folder / "config.json").write_text("{}"))
    from ftlab.setup.presets import prepare_tiny_pretrained
    assert prepare_tiny_pretrained() == tmp_path / "cache" / f"tiny-pretrained-v{PRETRAIN_VERSION}" and len(built) == 1
