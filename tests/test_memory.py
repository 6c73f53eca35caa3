import torch

from ftlab import RunConfig
from ftlab.memory import ActivationMeter, gradient_bytes, measure_training_step, optimizer_state_bytes, weight_bytes
from ftlab.setup.models import load_model
from ftlab.setup.presets import TINY_CONFIG


def _tiny_param_count(vocab: int) -> int:
    h, i, layers = TINY_CONFIG["hidden_size"], TINY_CONFIG["intermediate_size"], TINY_CONFIG["num_hidden_layers"]
    kv = h // TINY_CONFIG["num_attention_heads"] * TINY_CONFIG["num_key_value_heads"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h  # q,o + k,v + gate,up,down + two RMSNorms
    return vocab * h + layers * per_layer + h  # tied embedding/head + final norm


def _batch(n=16, seq=128):
    ids = torch.randint(0, 256, (n, seq), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids.clone()}


def test_full_finetune_bytes_equal_hand_computed():
    model, tok = load_model(RunConfig(model="tiny", lora_r=0))
    n = _tiny_param_count(len(tok))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    m = measure_training_step(model, _batch(), opt)
    assert m.weights == 4 * n  # fp32, the tied embedding counted once
    assert m.gradients == 4 * n
    assert m.optimizer == 2 * 4 * n  # exp_avg + exp_avg_sq
    assert m.activations > 0 and m.total == m.weights + m.gradients + m.optimizer + m.activations


def test_lora_bytes_equal_hand_computed():
    cfg = RunConfig(model="tiny", lora_r=4, lora_target_modules=("q_proj", "v_proj"))
    model, tok = load_model(cfg)
    h = TINY_CONFIG["hidden_size"]
    kv = h // TINY_CONFIG["num_attention_heads"] * TINY_CONFIG["num_key_value_heads"]
    lora = TINY_CONFIG["num_hidden_layers"] * 4 * ((h + h) + (h + kv))  # r*(in+out) for q and v
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    m = measure_training_step(model, _batch(4, 32), opt)
    assert m.weights == 4 * (_tiny_param_count(len(tok)) + lora)
    assert m.gradients == 4 * lora  # the frozen base has no gradients
    assert m.optimizer == 8 * lora


def test_activation_meter_counts_saved_tensors_not_weights():
    lin = torch.nn.Linear(100, 50, bias=False)
    x = torch.randn(8, 100, requires_grad=False)
    with ActivationMeter(lin) as meter:
        y = torch.relu(lin(x))  # matmul saves x (8x100); relu saves its output (8x50); the weight is excluded
    assert meter.bytes == 4 * (8 * 100 + 8 * 50)
    y.sum().backward()
    assert gradient_bytes(lin) == 4 * 50 * 100 and weight_bytes(lin) == 4 * 50 * 100
    assert optimizer_state_bytes(None) == 0


def test_gradient_checkpointing_at_least_halves_activation_bytes():
    base = measure_training_step(load_model(RunConfig(model="tiny", lora_r=0))[0], _batch())
    ckpt = measure_training_step(load_model(RunConfig(model="tiny", lora_r=0, gradient_checkpointing=True))[0], _batch())
    assert ckpt.activations <= base.activations / 2
    assert ckpt.weights == base.weights and ckpt.gradients == base.gradients
