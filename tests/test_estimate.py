"""The memory predictor (ftlab.memory.predict) against exact measurement (ftlab.memory.measure).

Every case loads the model as a run would, takes one measured training step on random
token ids (labels = inputs, no padding) with the run's optimizer (one step, so its state
exists), and compares with what ``estimate`` predicted from the config alone. Weights,
gradients and optimizer state must match to the byte; activations and the total within
5% (today they match to the byte too: the predictor walks the same ops autograd does).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig

import ftlab
from ftlab import RunConfig
from ftlab.config.run_config import OPTIMIZERS
from ftlab.errors import ModelNotFoundError
from ftlab.memory import (Architecture, MemoryBreakdown, estimate, measure_training_step, model_architecture, setup_for,
                          weight_bytes)
from ftlab.memory.fits import MODEL_SIZES, fits_table
from ftlab.memory.predict import breakdown
from ftlab.setup.models import count_parameters, load_model
from ftlab.setup.presets import TINY_CONFIG, resolve_model
from ftlab.training.arguments import training_optimizer

FIELDS = ("weights", "gradients", "optimizer", "activations", "total")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Bytes do not depend on threads. On a busy shared 2-core machine one thread avoids
    oversubscription, which otherwise makes a SmolLM2 step 10-50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batch(batch: int, seq: int, vocab: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids.clone()}


def _measure(cfg: RunConfig) -> tuple[MemoryBreakdown, torch.nn.Module]:
    model, _ = load_model(cfg)
    opt = training_optimizer(cfg, model)  # the optimizer Trainer would build
    batch = _batch(cfg.per_device_train_batch_size, cfg.max_seq_length, model.get_input_embeddings().num_embeddings)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):  # what Trainer(bf16=True) does
        return measure_training_step(model, batch, opt), model


def _assert_close(predicted: MemoryBreakdown, measured: MemoryBreakdown) -> None:
    for field in ("weights", "gradients", "optimizer"):
        assert getattr(predicted, field) == getattr(measured, field), field
    for field in ("activations", "total"):
        p, m = getattr(predicted, field), getattr(measured, field)
        assert abs(p - m) <= 0.05 * m, f"{field}: predicted {p}, measured {m} ({p / m - 1:+.2%})"


@pytest.fixture(scope="module")
def smollm2() -> str:
    try:
        resolve_model("smollm2-135m")
    except ModelNotFoundError as err:
        pytest.skip(str(err))
    return "smollm2-135m"


TINY_CASES = [
    pytest.param(dict(lora_r=0), id="tiny-full"),
    pytest.param(dict(lora_r=4, lora_target_modules=("q_proj", "v_proj")), id="tiny-lora"),
    pytest.param(dict(lora_r=0, gradient_checkpointing=True), id="tiny-full-ckpt"),
    pytest.param(dict(lora_r=4, lora_target_modules=("q_proj", "v_proj"), gradient_checkpointing=True), id="tiny-lora-ckpt"),
    pytest.param(dict(lora_r=0, optim="adamw_8bit"), id="tiny-full-adamw8bit"),
    pytest.param(dict(lora_r=0, optim="adafactor"), id="tiny-full-adafactor"),
    pytest.param(dict(lora_r=0, optim="sgd"), id="tiny-full-sgd"),
    pytest.param(dict(lora_r=4, lora_target_modules=("all-linear",), lora_dropout=0.0), id="tiny-lora-all-linear-nodropout"),
    pytest.param(dict(lora_r=0, bf16=True), id="tiny-full-bf16-autocast"),
    pytest.param(dict(lora_r=4, lora_target_modules=("all-linear",), bf16=True), id="tiny-lora-bf16-autocast"),
    pytest.param(dict(lora_r=4, load_in_4bit=True, bnb_4bit_use_double_quant=False), id="tiny-qlora-no-double-quant"),
    pytest.param(dict(lora_r=4, load_in_4bit=True), id="tiny-qlora"),
    pytest.param(dict(lora_r=4, load_in_8bit=True), id="tiny-lora-int8-base"),
    pytest.param(dict(lora_r=4, load_in_4bit=True, gradient_checkpointing=True), id="tiny-qlora-ckpt"),
]


@pytest.mark.parametrize("overrides", TINY_CASES)
def test_tiny_prediction_matches_measurement(overrides):
    cfg = RunConfig(model="tiny", per_device_train_batch_size=2, max_seq_length=48, **overrides)
    measured, _ = _measure(cfg)
    _assert_close(estimate(cfg), measured)


CHAPTER_07_OPTIMIZERS = [
    pytest.param("adamw_torch", "", id="adamw_torch"),
    pytest.param("adafactor", "", id="adafactor"),
    pytest.param("lion_32bit", "", id="lion_32bit"),
    pytest.param("lion_8bit", "", id="lion_8bit"),
    pytest.param("sgd", "momentum=0.9", id="sgd-momentum"),
    pytest.param("sgd", "momentum=0.9,nesterov=true", id="sgd-nesterov"),
    pytest.param("adamw_8bit", "", id="adamw_8bit"),
    pytest.param("rmsprop", "momentum=0.9", id="rmsprop-momentum"),
    pytest.param("rmsprop", "centered=true", id="rmsprop-centered"),
    pytest.param("rmsprop", "momentum=0.5,centered=true", id="rmsprop-momentum-centered"),
]


@pytest.mark.parametrize("optim, optim_args", CHAPTER_07_OPTIMIZERS)
@pytest.mark.parametrize("overrides", [pytest.param(dict(lora_r=0), id="full"),
                                       # r=8 on all seven projections: up/gate/down's B or A reach bitsandbytes'
                                       # 4096-value threshold, so 8-bit optimizers keep both 8-bit and fp32 state
                                       pytest.param(dict(lora_r=8, lora_target_modules=("all-linear",)), id="lora")])
def test_every_optimizer_chapter_07_compares_is_priced_to_the_byte(optim, optim_args, overrides):
    cfg = RunConfig(model="tiny", per_device_train_batch_size=2, max_seq_length=32, optim=optim, optim_args=optim_args,
                    **overrides)
    measured, _ = _measure(cfg)
    predicted = estimate(cfg)
    assert predicted.optimizer == measured.optimizer > 0
    _assert_close(predicted, measured)


def test_optim_args_buffers_cost_one_moment_each():
    """SGD's momentum buffer and RMSprop's momentum and centering buffers are each one more
    parameter-sized tensor; momentum=0 keeps none."""
    base = RunConfig(model="tiny", lora_r=0)
    n = count_parameters(load_model(base)[0])[0]
    cost = {args: estimate(base.replace(optim="sgd", optim_args=args)).optimizer
            for args in ("", "momentum=0.0", "momentum=0.9", "momentum=0.9,dampening=0.1")}
    assert cost == {"": 0, "momentum=0.0": 0, "momentum=0.9": 4 * n, "momentum=0.9,dampening=0.1": 4 * n}
    rmsprop = [estimate(base.replace(optim="rmsprop", optim_args=a)).optimizer
               for a in ("", "momentum=0.9", "momentum=0.9,centered=true", "centered=false")]
    assert rmsprop == [4 * n, 8 * n, 12 * n, 4 * n]


SMOLLM2_CASES = [
    pytest.param(dict(), 2, 48, id="smollm2-lora"),
    pytest.param(dict(gradient_checkpointing=True), 2, 48, id="smollm2-lora-ckpt"),
    pytest.param(dict(load_in_4bit=True), 2, 48, id="smollm2-qlora"),
    pytest.param(dict(load_in_4bit=True, gradient_checkpointing=True), 2, 48, id="smollm2-qlora-ckpt"),
    pytest.param(dict(lora_r=0), 1, 32, id="smollm2-full"),
    pytest.param(dict(lora_r=0, gradient_checkpointing=True), 1, 32, id="smollm2-full-ckpt"),
]


@pytest.mark.parametrize("overrides, batch, seq", SMOLLM2_CASES)
def test_smollm2_prediction_matches_measurement(smollm2, overrides, batch, seq):
    cfg = RunConfig(model=smollm2, per_device_train_batch_size=batch, max_seq_length=seq, **overrides)
    measured, _ = _measure(cfg)
    predicted = estimate(cfg)
    _assert_close(predicted, measured)
    # seq_len / batch_size override the config's values, as for a what-if question
    assert estimate(cfg.replace(max_seq_length=512), seq_len=seq) == predicted


def test_8bit_row_scales_are_weights_before_and_after_the_first_forward():
    """LLM.int8's per-row fp32 scales (``SCB``) move from the weight to the layer's matmul
    state on the first forward; the meter must count them, once, in both places."""
    import bitsandbytes as bnb
    cfg = RunConfig(model="tiny", lora_r=4, load_in_8bit=True, per_device_train_batch_size=2, max_seq_length=48)
    model, _ = load_model(cfg)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    int8 = sum(m.weight.numel() for m in layers)
    scales = sum(4 * m.weight.shape[0] for m in layers)
    others = sum(p.numel() * p.element_size() for p in model.parameters() if p.dtype != torch.int8)
    assert layers and all(m.weight.SCB is not None for m in layers)
    assert weight_bytes(model) == int8 + scales + others
    ids = torch.randint(0, 200, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(m.weight.SCB is None and m.state.SCB is not None for m in layers), "bitsandbytes moved SCB elsewhere"
    assert weight_bytes(model) == int8 + scales + others


@pytest.mark.parametrize("overrides", [pytest.param(dict(lora_r=0), id="full"),
                                       pytest.param(dict(lora_r=0, optim="adafactor"), id="full-adafactor"),
                                       pytest.param(dict(lora_r=0, optim="sgd", optim_args="momentum=0.9"),
                                                    id="full-sgd-momentum"),
                                       pytest.param(dict(lora_r=0, optim="lion_32bit"), id="full-lion"),
                                       pytest.param(dict(lora_r=4, lora_target_modules=("all-linear",)), id="lora"),
                                       pytest.param(dict(lora_r=4, load_in_4bit=True), id="qlora")])
def test_bf16_weights_as_fits_table_assumes(overrides):
    """fits_table predicts bf16 models (bf16 base, fp32 adapters). Check that precision path
    on the CPU: cast the tiny model's base weights to bf16, keep the adapters in fp32."""
    cfg = RunConfig(model="tiny", per_device_train_batch_size=2, max_seq_length=48, **overrides)
    model, _ = load_model(cfg)
    for name, p in model.named_parameters():
        if "lora_" not in name and p.dtype == torch.float32:
            p.data = p.data.to(torch.bfloat16)
    opt = training_optimizer(cfg, model)
    measured = measure_training_step(model, _batch(2, 48, model.get_input_embeddings().num_embeddings), opt)
    setup = replace(setup_for(cfg), dtype="bfloat16")
    _assert_close(breakdown(model_architecture("tiny"), setup, 2, 48), measured)


def test_hypothetical_model_config_equals_the_preset():
    cfg = RunConfig(model="tiny", lora_r=0)
    arch = model_architecture("tiny")
    as_config = LlamaConfig(vocab_size=arch.vocab, **TINY_CONFIG)
    assert estimate(cfg, model_config=as_config) == estimate(cfg)
    assert estimate(cfg, model_config=as_config.to_dict()) == estimate(cfg)
    model, _ = load_model(cfg)
    assert arch.parameter_count() == count_parameters(model)[0]
    # twice the tokens: activations grow, weights/gradients/optimizer do not
    short, long = estimate(cfg, seq_len=64), estimate(cfg, seq_len=128)
    assert long.weights == short.weights and long.optimizer == short.optimizer
    assert 1.9 * short.activations < long.activations < 2.1 * short.activations


def test_unknown_lora_target_and_offline_hub_id_explain_themselves():
    with pytest.raises(ValueError, match="lora_target_modules"):
        estimate(RunConfig(model="tiny", lora_target_modules=("c_attn",)))
    with pytest.raises(ModelNotFoundError, match="model_config"):
        estimate(RunConfig(model="./no-such-model-folder"))


def test_model_sizes_match_published_parameter_counts():
    published = {"0.5B": 0.494e9, "1.5B": 1.544e9, "3B": 3.086e9, "7B": 7.616e9, "8B": 8.030e9,
                 "13B": 13.016e9, "70B": 70.554e9}
    for size, count in published.items():
        assert abs(MODEL_SIZES[size].parameter_count() / count - 1) < 0.001, size


def test_fits_table_sanity():
    rows = fits_table()
    by = {(r["model"], r["method"]): r for r in rows}
    assert len(rows) == 7 * 3
    assert not by["70B", "full"]["fits_80GiB"]  # ~12 bytes/param for 70B params: hundreds of GiB
    assert by["0.5B", "qlora"]["fits_16GiB"]
    sizes = list(MODEL_SIZES)
    for method in ("full", "lora", "qlora"):
        states = [by[s, method]["weights"] + by[s, method]["gradients"] + by[s, method]["optimizer"] for s in sizes]
        assert states == sorted(states) and len(set(states)) == len(states), method  # monotonic in model size
    for method in ("full", "lora"):
        totals = [by[s, method]["total"] for s in sizes]
        assert totals == sorted(totals), method
    for size in sizes:
        assert by[size, "qlora"]["total"] < by[size, "lora"]["total"] < by[size, "full"]["total"]
        for method in ("full", "lora", "qlora"):
            r = by[size, method]
            fits = [r[f"fits_{g}GiB"] for g in (16, 24, 48, 80)]
            assert fits == sorted(fits)  # a bigger card never turns a fit into a miss
            assert r["total"] == r["weights"] + r["gradients"] + r["optimizer"] + r["activations"] + r["transient"]
    # checkpointing shrinks the saved activations of the same step
    no_ckpt = {(r["model"], r["method"]): r for r in fits_table(model_sizes=("8B",), gradient_checkpointing=False)}
    assert no_ckpt["8B", "lora"]["activations"] > 5 * by["8B", "lora"]["activations"]
    # fp32 weights, as ftlab loads them: a full fine-tune holds 16 bytes a parameter before activations, so an
    # 8B LoRA's frozen fp32 base alone outgrows a 24 GiB card
    for size in sizes:
        r, n = by[size, "full"], MODEL_SIZES[size].parameter_count()
        assert r["weights"] + r["gradients"] + r["optimizer"] == 16 * n and r["weights"] == 4 * n
    assert not by["8B", "lora"]["fits_24GiB"] and by["8B", "lora"]["fits_80GiB"] and by["8B", "qlora"]["fits_16GiB"]
    # a model loaded in bf16 (12 bytes a parameter, fp32 moments): the well-known data point, 7-8B LoRA needs a
    # 24 GiB card and QLoRA fits 16 GiB
    bf16 = {(r["model"], r["method"]): r for r in fits_table(model_sizes=sizes, weights="bfloat16")}
    for size in sizes:
        r, n = bf16[size, "full"], MODEL_SIZES[size].parameter_count()
        assert r["weights"] + r["gradients"] + r["optimizer"] == 12 * n and r["total"] < by[size, "full"]["total"]
    assert bf16["8B", "qlora"]["fits_16GiB"] and not bf16["8B", "lora"]["fits_16GiB"] and bf16["8B", "lora"]["fits_24GiB"]
    with pytest.raises(ValueError, match=r"weights='fp16'"):
        fits_table(weights="fp16")


def test_architecture_from_qwen2_config_has_qkv_bias():
    arch = Architecture.from_config({"model_type": "qwen2", "num_hidden_layers": 2, "hidden_size": 64,
                                     "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
                                     "vocab_size": 100, "tie_word_embeddings": True})
    assert arch.qkv_bias and not arch.o_bias and arch.d == 16


def test_the_predictor_is_reachable_from_the_package_root():
    assert ftlab.estimate is estimate is ftlab.memory.predict.estimate


@pytest.mark.parametrize("optim", OPTIMIZERS)
def test_every_optimizer_a_config_accepts_is_priced(optim):
    """One table lists the optimizers RunConfig accepts and prices their state, so none is
    left without a price; paged ones too (predicting needs no GPU)."""
    optimizer = estimate(RunConfig(model="tiny", lora_r=0, optim=optim)).optimizer
    assert optimizer == 0 if optim == "sgd" else optimizer > 0


@pytest.mark.parametrize("optim", ["adamw_8bit", "lion_32bit", "adafactor"])
def test_the_trainers_own_optimizer_state_is_predicted(optim, tiny_config, tmp_path):
    """What Trainer really builds, measured inside a run: for 8-bit optimizers it keeps the
    embedding's state in 32 bits (its bitsandbytes override), which the predictor knows."""
    from ftlab import train
    cfg = tiny_config.replace(optim=optim, max_steps=1, eval_steps=1, exact_match_size=0)
    run = train(cfg, runs_dir=tmp_path, progress=False)
    assert run.memory.optimizer == estimate(cfg).optimizer


# --- CUDA, measured on a lent GPU ------------------------------------------------------------------

CUDA_RECORDS = sorted((Path(__file__).resolve().parent.parent / "benchmarks" / "results").glob("memory_predictor_cuda_*.json"))
METHOD_KNOBS = {"full": dict(lora_r=0), "lora": dict(lora_r=8), "qlora": dict(lora_r=8, load_in_4bit=True)}


def _recorded_config(name: str, batch: int, seq: int) -> RunConfig:
    """The RunConfig behind a case of ``benchmarks/memory_predictor.py`` ("tiny lora ckpt bf16"); its SmolLM2 was
    the same architecture with random weights (``benchmarks/gpu_check.sh``), which saves the same tensors."""
    words = name.split()
    model = "tiny" if words[0] == "tiny" else "smollm2-135m"
    return RunConfig(model=model, gradient_checkpointing="ckpt" in words, bf16="bf16" in words,
                     per_device_train_batch_size=batch, max_seq_length=seq, **METHOD_KNOBS[words[1]])


@pytest.mark.parametrize("record", CUDA_RECORDS, ids=lambda p: p.stem)
def test_the_cuda_prediction_is_the_h200_measurement_to_the_byte(record):
    """benchmarks/gpu_check.sh measured 24 cases on an H200 (torch 2.11) at 4 x 128 and 16 x 512: in fp32, SDPA ran
    PyTorch's math kernel (the full attention matrix saved), in bf16 the flash kernel (with its RNG state)."""
    result = json.loads(record.read_text())
    assert len(result["cases"]) == 24
    for name, row in result["cases"].items():
        predicted = estimate(_recorded_config(name, result["batch"], result["seq"]), device="cuda")
        for field in ("weights", "gradients", "optimizer", "activations", "total"):
            assert getattr(predicted, field) == row["measured"][field], (name, field)
