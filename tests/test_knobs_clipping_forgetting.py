"""Gradient clipping read from a run's grad_norm history, and forgetting measured as the KL of the
tuned model's next-token distribution from the base's on held-out pretraining-style prose."""
from __future__ import annotations

import copy

import pytest
import torch

from ftlab import Run, RunConfig, load_model
from ftlab.lessons.forgetting import forgetting, held_out_texts
from ftlab.setup.pretrain import SEED, corpus
from ftlab.training.clipping import clipped_fraction, clipping_summary, grad_norms, spikes


def test_clipped_fraction_counts_the_steps_clip_grad_norm_scales():
    norms = [0.2, 0.5, 1.5, 0.31, 1.0, 3.0]
    assert clipped_fraction(norms, 1.0) == pytest.approx(2 / 6)  # 1.0 itself is left as it is
    assert clipped_fraction(norms, 0.3) == pytest.approx(5 / 6)
    assert clipped_fraction(norms, 0) == 0.0  # max_grad_norm=0: no clipping
    with pytest.raises(ValueError, match=">= 0"):
        clipped_fraction(norms, -1)
    # the same decision torch makes: a gradient whose norm exceeds the threshold is scaled
    for norm in norms:
        g = torch.nn.Parameter(torch.zeros(4))
        g.grad = torch.full((4,), norm / 2)  # ||g|| = norm
        torch.nn.utils.clip_grad_norm_([g], 1.0)
        assert (float(g.grad.norm()) < norm - 1e-4) == (clipped_fraction([norm], 1.0) == 1.0)


def test_spikes_are_jumps_above_the_recent_median():
    norms = [1.0] * 12 + [5.0] + [1.0] * 5 + [2.5]
    assert spikes(norms) == [12, 18]
    assert spikes(norms, factor=3) == [12]


def test_a_runs_history_gives_its_clipping(tiny_config, tmp_path):
    from ftlab import train

    run = train(tiny_config.replace(max_steps=6, max_grad_norm=0.3), runs_dir=tmp_path, progress=False)
    steps, norms = grad_norms(run)
    assert steps == list(range(1, 7)) and all(n > 0 for n in norms)
    summary = clipping_summary(run, (1.0, 0.3))
    assert summary["clipped"][0.3] == clipped_fraction(run, 0.3) >= summary["clipped"][1.0]
    with pytest.raises(ValueError, match="no grad_norm"):
        grad_norms(Run(config=tiny_config, history=[{"step": 1, "loss": 1.0}]))


def test_held_out_texts_are_new_prose_from_the_pretraining_generator():
    texts = held_out_texts(40)
    assert len(texts) == 40 and all(isinstance(t, str) and t for t in texts)
    seen = {d for d in corpus(2000, SEED) if isinstance(d, str)}
    assert not seen & set(texts)
    assert not any("?" in t for t in texts)  # prose, never a question
    with pytest.raises(ValueError, match="pretraining corpus"):
        held_out_texts(4, seed=SEED)


@pytest.fixture(scope="module")
def base():
    model, tokenizer = load_model(RunConfig(model="tiny-pretrained", lora_r=0))
    return model, tokenizer


def test_kl_of_a_model_with_itself_is_zero_and_grows_with_a_perturbation(base):
    model, tokenizer = base
    texts = held_out_texts(8)
    assert forgetting(model, model, texts, tokenizer) == pytest.approx(0.0, abs=1e-7)
    assert forgetting(model, copy.deepcopy(model), texts, tokenizer) == pytest.approx(0.0, abs=1e-6)
    measured = []
    for scale in (0.01, 0.05, 0.2):
        tuned = copy.deepcopy(model)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in tuned.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * scale * p.std().nan_to_num(0))
        measured.append(forgetting(model, tuned, texts, tokenizer))
    assert 0 < measured[0] < measured[1] < measured[2]


def test_one_peft_model_is_measured_against_its_own_base(base):
    _, tokenizer = base
    model, _ = load_model(RunConfig(model="tiny-pretrained", lora_r=4, lora_alpha=8))
    texts = held_out_texts(6)
    assert forgetting(model, model, texts, tokenizer) == pytest.approx(0.0, abs=1e-7)  # B starts at 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    assert forgetting(model, model, texts, tokenizer) > 1e-5
    assert model.training  # the measure leaves the mode as it found it
