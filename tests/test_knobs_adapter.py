"""The model after training (ftlab.training.adapter_io): merged LoRA gives the adapter's logits,
the adapter is a small fraction of the full model on disk, a reload gives the same logits,
weights kept beside the run are found again, and generation three ways."""
from __future__ import annotations

import pytest
import torch

from ftlab import RunConfig, load_model
from ftlab.training.adapter_io import (WEIGHTS, generate_ways, merge_gap, reload_gap, saved_bytes, trained_model,
                                       weights_folder)


@pytest.fixture(scope="module")
def lora():
    cfg = RunConfig(model="tiny-pretrained", lora_r=8, lora_alpha=16, lora_target_modules=["q_proj", "v_proj"])
    model, tokenizer = load_model(cfg)
    with torch.no_grad():  # a trained-looking adapter: B is 0 at the start, which would hide any mistake
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(3))
    ids = tokenizer(["On 2020-01-02 Alder Bank paid 12.00 USD.", "The date 3 Mar 2021 is written"],
                    return_tensors="pt", padding=True)["input_ids"]
    return cfg, model, tokenizer, ids


def test_merge_and_unload_gives_the_adapters_logits(lora):
    cfg, model, _, ids = lora
    assert merge_gap(model, ids) < 1e-4
    assert any("lora_B" in n for n, _ in model.named_parameters())  # the model given keeps its adapter


def test_the_adapter_is_a_small_part_of_the_full_model_on_disk(lora):
    _, model, _, _ = lora
    sizes = saved_bytes(model)
    lora_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert sizes["adapter"] == pytest.approx(lora_params * 4, rel=0.05)  # float32, plus a small header
    assert sizes["full model"] > 10 * sizes["adapter"]


def test_reload_from_disk_gives_the_same_logits(lora, tiny_config):
    cfg, model, _, ids = lora
    assert reload_gap(model, cfg, ids) < 1e-5
    full, _ = load_model(RunConfig(model="tiny-pretrained", lora_r=0))
    assert reload_gap(full, RunConfig(model="tiny-pretrained", lora_r=0), ids) == 0.0


def test_generation_three_ways(lora):
    cfg, model, tokenizer, _ = lora
    out = generate_ways(model, tokenizer, "What is 2 plus 2?", cfg.system_prompt, max_new_tokens=12)
    assert set(out) == {"chat template", "no chat template", "wrong EOS"}
    for way in out.values():
        assert 1 <= way["tokens"] <= 12 and isinstance(way["text"], str)
        assert way["stopped"] == way["text"].endswith(tokenizer.eos_token if way is not out["wrong EOS"] else "<|endoftext|>")
    with pytest.raises(ValueError, match="other than its EOS"):
        generate_ways(model, tokenizer, "x", "", wrong_eos=tokenizer.eos_token)


def test_kept_weights_are_found_again_and_are_the_trained_model(tiny_config, tmp_path, addition_jsonl):
    cfg = tiny_config.replace(model="tiny-pretrained", lora_r=4, lora_alpha=8, max_steps=3, eval_steps=3,
                              exact_match_size=0, max_seq_length=96)
    run, model = trained_model(cfg, runs_dir=tmp_path, progress=False)
    folder = weights_folder(cfg, tmp_path)
    assert folder.parent.name == WEIGHTS and any(folder.glob("*.safetensors"))
    assert not run.from_cache and not any(p.name != folder.name for p in folder.parent.iterdir())  # no temp left
    again_run, again = trained_model(cfg, runs_dir=tmp_path, progress=False)
    assert again_run.from_cache
    ids = torch.tensor([[256, 117, 115, 101, 114, 10, 49, 43, 50]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)
    # the trained adapter moved: the model differs from its base
    with torch.no_grad(), again.disable_adapter():
        base = again(input_ids=ids).logits
    assert not torch.allclose(base, again(input_ids=ids).logits)
    # the runs folder still lists just the run (the weights sub-folder is not a run)
    from ftlab.runs.cache import RunCache

    assert [r.key for _, r in RunCache(tmp_path).listing().runs] == [run.key]


def test_a_run_already_cached_is_retrained_for_its_weights_and_left_as_it_was(tiny_config, tmp_path):
    from ftlab import train
    from ftlab.runs.cache import RunCache

    cfg = tiny_config.replace(model="tiny-pretrained", max_steps=2, eval_steps=2, exact_match_size=0, max_seq_length=96)
    cached = train(cfg, runs_dir=tmp_path, progress=False)
    path = next(tmp_path.glob("*.json"))
    before = path.read_bytes()
    run, model = trained_model(cfg, runs_dir=tmp_path, progress=False)
    assert path.read_bytes() == before  # the cache's run is the one a report read
    assert run.key == cached.key and run.metrics["steps"] == 2
    again, _ = trained_model(cfg, runs_dir=tmp_path, progress=False)
    assert again.from_cache and again.metrics == run.metrics  # the kept run is the one of the kept weights
    assert len(RunCache(tmp_path).listing().runs) == 1


def test_retrained_weights_replace_the_cached_run_too(tiny_config, tmp_path):
    from ftlab import train

    cfg = tiny_config.replace(model="tiny-pretrained", max_steps=2, eval_steps=2, exact_match_size=0, max_seq_length=96)
    train(cfg, runs_dir=tmp_path, progress=False)
    path = next(tmp_path.glob("*.json"))
    before = path.read_bytes()
    run, _ = trained_model(cfg, runs_dir=tmp_path, progress=False, retrain=True)
    assert path.read_bytes() != before  # the cache holds the retrained run, whose weights are kept
    assert train(cfg, runs_dir=tmp_path, progress=False).metrics == run.metrics
