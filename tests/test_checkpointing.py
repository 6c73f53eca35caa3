import tempfile

import torch
from transformers import Trainer, set_seed

from ftlab import RunConfig, load_data, load_model
from ftlab.lessons.checkpointing import activation_sweep, library_guards_input_grads, reentrant_trap
from ftlab.training.arguments import training_arguments


def test_reentrant_trap_is_real_and_the_fixes_work():
    trap = reentrant_trap()
    assert trap["reentrant"] == 0.0
    assert trap["reentrant + input requires grad"] > 0
    assert trap["non-reentrant"] == trap["reentrant + input requires grad"]


def test_transformers_guards_input_grads_for_lora():
    assert library_guards_input_grads(RunConfig(model="tiny", lora_r=4))


def test_activation_sweep_rows():
    rows = activation_sweep(RunConfig(model="tiny", lora_r=0), [32, 64], [2], repeats=1)
    assert len(rows) == 4
    by = {(r["gradient_checkpointing"], r["seq_len"]): r["activations"] for r in rows}
    assert by[(True, 64)] * 2 < by[(False, 64)]
    assert by[(False, 64)] > by[(False, 32)]  # activations grow with the sequence


def _one_sgd_step(cfg: RunConfig) -> dict[str, torch.Tensor]:
    set_seed(cfg.seed)
    model, tok = load_model(cfg)
    data = load_data(cfg, tok)
    with tempfile.TemporaryDirectory() as out:
        args = training_arguments(cfg, out)
        args.eval_strategy = "no"
        Trainer(model=model, args=args, train_dataset=data.train, data_collator=data.collator).train()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_accumulation_matches_the_large_batch_update(tiny_config):
    # one SGD step, no clipping: the weights move by exactly -lr * gradient
    cfg = tiny_config.replace(max_steps=1, optim="sgd", learning_rate=0.5, max_grad_norm=0.0, lr_scheduler_type="constant")
    big = _one_sgd_step(cfg.replace(per_device_train_batch_size=8, gradient_accumulation_steps=1))
    acc = _one_sgd_step(cfg.replace(per_device_train_batch_size=2, gradient_accumulation_steps=4))
    small = _one_sgd_step(cfg.replace(per_device_train_batch_size=2, gradient_accumulation_steps=1))
    init, _ = load_model(cfg)
    moved = {n: big[n] - p.detach() for n, p in init.named_parameters()}
    assert max(m.abs().max() for m in moved.values()) > 1e-3  # the step really moved the weights
    for name in big:
        torch.testing.assert_close(acc[name], big[name], atol=1e-5, rtol=1e-4)
    assert any(not torch.allclose(small[n], big[n], atol=1e-5) for n in big)  # a different batch differs


def test_the_reentrant_trap_shows_pytorchs_own_warning_and_error():
    from ftlab.lessons.checkpointing import reentrant_symptoms
    warning, error = reentrant_symptoms()
    assert "None of the inputs have requires_grad=True" in warning
    assert "element 0 of tensors does not require grad" in error


def test_checkpointing_by_hand_gives_the_plain_gradients_and_saves_only_the_input():
    from torch.utils.checkpoint import checkpoint

    from ftlab.lessons.checkpointing import recompute_in_backward
    from ftlab.memory.measure import ActivationMeter
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))
    x = torch.randn(8, 32, requires_grad=True)

    def grads(run):
        block.zero_grad(set_to_none=True)
        x.grad = None
        with ActivationMeter(block) as meter:
            loss = run(x).pow(2).sum()
        loss.backward()
        return [x.grad.clone()] + [p.grad.clone() for p in block.parameters()], meter.bytes

    plain, plain_saved = grads(block)
    by_hand, hand_saved = grads(lambda t: recompute_in_backward(block, t))
    library, _ = grads(lambda t: checkpoint(block, t, use_reentrant=False))
    for ours, theirs, lib in zip(by_hand, plain, library):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(ours, lib, rtol=1e-6, atol=1e-7)
    # inside the checkpoint only the input x is kept (plus the block's output, saved by the loss's pow)
    assert hand_saved == x.numel() * 4 + 8 * 32 * 4 < plain_saved
