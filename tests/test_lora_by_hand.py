"""LoRA's forward written by hand is peft's lora.Linear."""
import pytest
import torch
from peft import LoraConfig, get_peft_model

from ftlab.lessons.lora import lora_forward, lora_scaling, lora_update


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_forward_is_pefts_layer(rslora):
    torch.manual_seed(0)
    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(32, 16)),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["0"], lora_dropout=0.0, use_rslora=rslora))
    layer = model.base_model.model[0]
    torch.nn.init.normal_(layer.lora_B["default"].weight)  # B starts at zero: give the path something to add
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert lora_scaling(8, 4, rslora=rslora) == pytest.approx(layer.scaling["default"])
    x = torch.randn(5, 32)
    with torch.no_grad():
        torch.testing.assert_close(lora_forward(x, layer.base_layer, A, B, alpha=8, rslora=rslora), layer(x))
        merged = layer.base_layer.weight + lora_update(A, B, alpha=8, rslora=rslora)
        torch.testing.assert_close(x @ merged.T + layer.base_layer.bias, layer(x), rtol=1e-5, atol=1e-5)
    assert torch.linalg.matrix_rank(lora_update(A, B, alpha=8)) <= 4


@pytest.mark.parametrize("rslora, scaling", [(False, 32 / 16), (True, 32 / 4)])
def test_run_config_use_rslora_sets_the_adapters_scaling(rslora, scaling):
    from ftlab import RunConfig
    from ftlab.setup.models import load_model
    model, _ = load_model(RunConfig(model="tiny", lora_r=16, lora_alpha=32, use_rslora=rslora, max_seq_length=32))
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.scaling["default"] == pytest.approx(scaling)
