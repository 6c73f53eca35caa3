"""Chapter 09's machinery on real processes: two gloo ranks, every strategy, measured against
the predictor and against one process.

One launch (module fixture) runs the tiny model through DDP, ZeRO-1, ZeRO-2 and FSDP on two
CPU processes, two steps each, and the worker's from-scratch all-reduce check; the tests
read its reports. Everything else (bad inputs, the fallback, the GPU command, the fits
table's devices dimension) starts no process, or one that is stopped on purpose.
"""
from __future__ import annotations

import shlex
from unittest import mock

import psutil
import pytest
from torch.distributed.run import get_args_parser

from ftlab import RunConfig
from ftlab.cli.main import main
from ftlab.distributed import DistributedError, LaunchError, Plan, launch, measure_or_explain, one_process, ring_traffic
from ftlab.distributed import launcher
from ftlab.errors import ArgumentError, ConfigError
from ftlab.memory import (MEMORY_PARTS, STRATEGIES, communication_bytes, devices_needed, estimate, fits_table,
                          gathered_bytes, model_architecture, setup_for, shard_rows, wire_bytes, zero_paper_bytes)
from ftlab.memory.predict import zero1_owners

TOLERANCE = 1e-5
"""Largest difference between the ranks' mean loss and one process's: float sums in another order."""


@pytest.fixture(scope="module")
def plan() -> Plan:
    config = RunConfig(model="tiny", lora_r=0, learning_rate=1e-3, per_device_train_batch_size=4, max_seq_length=32,
                       max_steps=2)
    return Plan(config, nproc=2, timeout_s=240)


@pytest.fixture(scope="module")
def result(plan):
    return launch(plan)


@pytest.fixture(scope="module")
def one(plan):
    return one_process(plan)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_ranks_memory_is_predicted_to_the_byte(result, plan, strategy):
    for rank in range(plan.nproc):
        measured, predicted = result.memory(strategy, rank), result.predicted(strategy, rank)
        assert [getattr(measured, p) for p in MEMORY_PARTS] == [getattr(predicted, p) for p in MEMORY_PARTS], rank
        # activations per rank = one process's activations at the per-rank batch
        assert measured.activations == estimate(plan.rank_config).activations


def test_what_each_strategy_splits(result, plan):
    whole = estimate(plan.rank_config)
    ddp, zero1, zero2, fsdp = (result.memory(s, 0) for s in ("ddp", "zero1", "zero2", "fsdp"))
    assert (ddp.weights, ddp.gradients, ddp.optimizer) == (whole.weights, whole.gradients, whole.optimizer)
    assert zero1.weights == whole.weights and sum(result.memory("zero1", r).optimizer for r in (0, 1)) == whole.optimizer
    for strategy in ("zero2", "fsdp"):  # the tiny vocabulary (259 rows) does not split evenly: 130 + 129 rows
        assert sum(result.memory(strategy, r).weights for r in (0, 1)) == whole.weights
        assert result.memory(strategy, 0).weights > result.memory(strategy, 1).weights
    assert zero2 == fsdp


def test_gathered_weights_zero2_whole_fsdp_one_layer(result, plan):
    arch, setup = model_architecture("tiny"), setup_for(plan.config)
    for strategy in STRATEGIES:
        assert result.gathered(strategy, 0) == gathered_bytes(arch, setup, strategy)
    assert result.gathered("zero2", 0) == estimate(plan.config).weights
    assert 0 < result.gathered("fsdp", 0) < result.gathered("zero2", 0) / 3


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_counted_bytes_equal_the_formula(result, plan, strategy):
    for rank in range(plan.nproc):
        steps = result.ranks[rank]["strategies"][strategy]["comm"]
        assert all(step == steps[0] for step in steps), "every step moves the same bytes"
        assert result.comm(strategy, rank) == result.predicted_comm(strategy)


def test_the_formulas_in_words(result, plan):
    whole = estimate(plan.config)
    assert result.comm("ddp") == {"all_reduce": whole.gradients}  # DDP all-reduces every gradient once
    assert result.comm("zero1") == {"all_reduce": whole.gradients, "broadcast": whole.weights}
    assert result.comm("fsdp")["all_gather"] == 2 * result.comm("zero2")["all_gather"]  # gathered again in backward
    assert result.comm("fsdp")["reduce_scatter"] == result.comm("zero2")["reduce_scatter"] >= whole.gradients
    assert ring_traffic(result.comm("ddp"), 2) == whole.gradients  # 2(N-1)/N = 1 on two ranks


def test_every_strategy_takes_one_processes_steps(result, one, plan):
    assert len(one["losses"]) == plan.steps
    for strategy in STRATEGIES:
        assert max(abs(a - b) for a, b in zip(result.losses(strategy), one["losses"])) <= TOLERANCE, strategy
        assert result.step_seconds(strategy) > 0


def test_from_scratch_all_reduce_equals_ddp(result):
    for report in result.ranks:
        check = report["scratch"]
        assert check["own_vs_ddp"] > 1e-3 * check["largest_gradient"]  # not averaged: different
        assert check["all_reduce_vs_ddp"] <= 1e-6 and check["ring_vs_ddp"] <= 1e-6
        assert check["ring_sent_bytes"] == check["gradient_bytes"]  # 2(N-1)/N of them, N = 2


def test_bytes_on_the_wire_are_the_counted_payloads_on_a_ring(result, plan):
    arch, setup = model_architecture(plan.config.model), setup_for(plan.rank_config)
    for strategy in STRATEGIES:
        assert ring_traffic(result.comm(strategy), plan.nproc) == wire_bytes(arch, setup, plan.nproc, strategy)


def test_the_averaging_lesson_on_prompt_masked_data(result):
    """Issue 38: with labels -100 on prompts the ranks' token counts differ, so the mean of the
    ranks' mean losses is not the batch's token mean, and neither are its averaged gradients;
    dividing by the token count of all ranks (average_tokens_across_devices) is one process's step."""
    checks = [report["averaging"] for report in result.ranks]
    assert len({c["tokens"] for c in checks}) > 1, "the ranks' rows must hold different numbers of labelled tokens"
    assert all(c["tokens_all_ranks"] == sum(d["tokens"] for d in checks) for c in checks)
    for c in checks:
        assert abs(c["token_mean_loss"] - c["one_process_loss"]) <= TOLERANCE
        assert abs(c["mean_of_means_loss"] - c["one_process_loss"]) > 10 * TOLERANCE
        assert c["token_mean_vs_one"] <= 1e-6 < 1e-3 * c["largest_gradient"] < c["mean_of_means_vs_one"]


def test_the_gpu_command_is_the_one_that_ran_and_parses(plan, tmp_path):
    assert Plan.from_json(plan.to_json()) == plan
    command = plan.command("plan.json", "results")
    args = get_args_parser().parse_args(shlex.split(command)[1:])
    assert (args.nproc_per_node, args.module, args.standalone) == ("2", True, True)
    assert (args.training_script, args.training_script_args) == ("ftlab.distributed.worker", ["plan.json", "--out", "results"])
    assert plan.torchrun_args("plan.json", "results") == shlex.split(command)[1:]
    eight = Plan(plan.config.replace(per_device_train_batch_size=64), nproc=8, strategies=("fsdp",))
    assert "--nproc-per-node 8" in eight.command() and eight.per_rank_batch == 8


def test_bad_inputs_are_refused_before_any_process_starts(plan, monkeypatch):
    config = plan.config
    with pytest.raises(DistributedError, match=r"Plan\(strategies='zero4'\).*one of ddp, zero1, zero2, fsdp"):
        Plan(config, strategies=("zero4",))
    with pytest.raises(ConfigError, match=r"RunConfig.per_device_train_batch_size=4 .* multiple of nproc=3"):
        Plan(config, nproc=3)
    with pytest.raises(DistributedError, match=r"Plan\(nproc=0\)"):
        Plan(config, nproc=0)
    with pytest.raises(DistributedError, match=r"Plan\(strategies='fsdp'\).*optim='adamw_8bit'"):
        Plan(config.replace(optim="adamw_8bit"), strategies=("fsdp",))
    with pytest.raises(ConfigError, match="load_in_4bit"):
        Plan(config.replace(lora_r=4, load_in_4bit=True), strategies=("ddp",))
    with pytest.raises(ConfigError, match="gradient_accumulation_steps"):
        Plan(config.replace(gradient_accumulation_steps=2))
    started = []
    monkeypatch.setattr(launcher.subprocess, "Popen", lambda *a, **k: started.append(a))
    too_many = Plan(config.replace(per_device_train_batch_size=4096), nproc=4096)
    with pytest.raises(DistributedError, match=r"launch\(nproc=4096\).*at most"):
        launch(too_many)
    assert measure_or_explain(too_many)[0] is None and not started
    with pytest.raises(ArgumentError, match=r"estimate\(strategy='zero4'\)"):
        estimate(config, devices=2, strategy="zero4")
    with pytest.raises(ArgumentError, match=r"estimate\(rank=2\)"):
        estimate(config, devices=2, strategy="fsdp", rank=2)


def test_no_processes_on_one_core_the_chapter_says_why(plan, monkeypatch):
    monkeypatch.setattr(launcher, "usable_cores", lambda: 1)
    started = []
    monkeypatch.setattr(launcher.subprocess, "Popen", lambda *a, **k: started.append(a))
    result, why = measure_or_explain(plan)
    assert result is None and "one CPU core" in why and not started  # said at once: no process was started
    with pytest.raises(LaunchError, match="one CPU core"):
        launch(Plan(plan.config, nproc=1, strategies=("ddp",)))


def test_workers_that_overrun_are_stopped_not_waited_for(plan, tmp_path, monkeypatch):
    quick = Plan(plan.config, nproc=2, strategies=("ddp",), timeout_s=1.5)
    waits, stopped = [], []
    real_stop = launcher._stop

    def stop(process):
        waits.extend(process.wait.call_args_list)
        real_stop(process)
        stopped.append(process.returncode)

    monkeypatch.setattr(launcher, "_stop", stop)
    popen = launcher.subprocess.Popen

    def watched(*args, **kwargs):  # records the timeout each wait for the workers is given
        process = popen(*args, **kwargs)
        wait = process.wait
        process.wait = mock.Mock(side_effect=lambda timeout=None: wait(timeout))
        return process

    monkeypatch.setattr(launcher.subprocess, "Popen", watched)
    with pytest.raises(LaunchError, match=r"did not finish within Plan.timeout_s=1.5 s and were stopped"):
        launch(quick, out=tmp_path)
    assert waits == [mock.call(timeout=1.5)]  # waited once, for Plan.timeout_s, not until they finished
    # then stopped, not finished: torchrun ends on the signal itself (status < 0) when it arrives before torchrun
    # has set its handler, and with status 1 when its handler turns SIGTERM into an error (a fast host)
    assert len(stopped) == 1 and stopped[0] != 0
    # no process of this launch is left (its folder is on every command line); the ranks get a bounded while to go
    left = [p for p in psutil.process_iter() if str(tmp_path) in " ".join(_cmdline(p))]
    assert not psutil.wait_procs(left, timeout=10)[1]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


# --- the predictor's devices dimension, no processes ---------------------------------------------


def test_one_device_is_todays_prediction_for_every_strategy():
    for config in (RunConfig(model="tiny", lora_r=0), RunConfig(model="tiny", lora_r=4, gradient_checkpointing=True)):
        for strategy in STRATEGIES:
            assert estimate(config, devices=1, strategy=strategy) == estimate(config)
    assert fits_table()[0]["devices"] == 1 and all(r["gathered"] == 0 for r in fits_table())


def test_shards_follow_torch_chunk_and_zero1_follows_zero_redundancy_optimizer():
    import torch
    for rows in (1, 7, 259, 576):
        for n in (1, 2, 3, 4, 8):
            assert [shard_rows(rows, n, r) for r in range(n)] == [len(c) for c in torch.arange(rows).chunk(n)] + \
                [0] * (n - len(torch.arange(rows).chunk(n)))
    assert zero1_owners([10, 30, 20, 30], 2) == [1, 0, 0, 1]  # largest first, to the emptiest (lowest) rank


def test_sharding_shrinks_with_devices_and_ddp_never_does():
    config = RunConfig(model="tiny", lora_r=0)
    arch = model_architecture("tiny")
    for strategy, shrinks in (("ddp", False), ("zero1", True), ("zero2", True), ("fsdp", True)):
        totals = [estimate(config, devices=n, strategy=strategy).total for n in (1, 2, 4)]
        assert (totals[0] > totals[1] > totals[2]) if shrinks else len(set(totals)) == 1, strategy
    assert communication_bytes(arch, setup_for(config), 4, "ddp") == communication_bytes(arch, setup_for(config), 2, "ddp")


def test_how_many_gpus_a_7b_and_70b_full_fine_tune_need():
    rows = {(r["model"], r["gpu_gib"]): r for r in devices_needed(weights="float32")}
    assert set(rows) == {(m, g) for m in ("7B", "70B") for g in (24, 40, 80)}
    for row in rows.values():
        assert row["full_ddp"] is None  # a full replica of a 7B fine-tune fits no card
        assert row["full_zero2"] is None or row["full_fsdp"] <= row["full_zero2"]
    # fp32 weights (as ftlab loads them): the 7B LoRA's frozen base outgrows 24 GiB, and FSDP's floor (two
    # gathered fp32 layers of 70B, activations, transients) outgrows a 24 GiB card at any count
    assert not rows["7B", 24]["lora_on_one"] and rows["7B", 24]["answer"].startswith("QLoRA on one GPU")
    assert rows["7B", 40]["answer"].startswith("LoRA on one GPU")
    assert rows["70B", 24]["full_fsdp"] is None and rows["70B", 24]["answer"] == "no full fine-tune fits"
    assert rows["70B", 80]["answer"].startswith("QLoRA on one GPU") and rows["70B", 40]["full_fsdp"] > rows["70B", 80]["full_fsdp"]
    # loaded in bf16 (the default), a 7B LoRA fits one 24 GiB card, and some count of 24 GiB cards trains a 70B
    bf16 = {(r["model"], r["gpu_gib"]): r for r in devices_needed()}
    assert bf16["7B", 24]["answer"].startswith("LoRA on one GPU") and bf16["70B", 24]["full_fsdp"] is not None
    per_gpu = {r["method"]: r for r in fits_table(model_sizes=("7B",), devices=rows["7B", 80]["full_fsdp"], strategy="fsdp",
                                                  weights="float32")}
    assert per_gpu["full"]["fits_80GiB"] and "qlora" not in per_gpu  # NF4 weights are not sharded


def test_cli_estimate_and_fits_take_devices_and_strategy(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_CACHE", str(tmp_path))
    assert main(["estimate", "--model", "tiny", "--method", "full", "--batch", "2", "--seq", "32", "--devices", "2",
                 "--strategy", "fsdp", "--weights", "float32"]) == 0
    out = capsys.readouterr().out
    expected = estimate(RunConfig(model="tiny", lora_r=0, per_device_train_batch_size=2, max_seq_length=32), devices=2,
                        strategy="fsdp")
    assert f"total {expected.total / 2**20:.1f} MiB".split() == out.splitlines()[5].split()
    assert "rank 0 of 2" in out and "all_gather" in out and "reduce_scatter" in out
    assert main(["fits", "--devices-needed", "--models", "7B", "--gpus", "24"]) == 0
    assert "LoRA on one GPU" in capsys.readouterr().out
    assert main(["fits", "--models", "7B", "--devices", "8", "--strategy", "zero1"]) == 0
    assert "on each of 8 GPUs with zero1" in capsys.readouterr().out
    assert main(["estimate", "--model", "tiny", "--devices", "0"]) == 1
    assert "estimate(devices=0)" in capsys.readouterr().err


def test_bytes_on_the_wire_zero2_as_ddp_fsdp_and_torch_zero1_half_again():
    """The ZeRO paper's result, per rank on a ring: ZeRO-2 moves DDP's bytes (reduce-scatter +
    all-gather = one all-reduce), ZeRO-3/FSDP 1.5x (the weights gathered twice), torch's ZeRO-1
    1.5x (DDP's all-reduce, then a broadcast of the updated weights); gathering bf16 copies of
    fp32 weights, as FSDP does on GPUs, brings FSDP back to 1.0x. The payload sums are 2x/2x/3x."""
    config = RunConfig(model="tiny", lora_r=0)
    arch, setup = model_architecture("tiny"), setup_for(config)
    for n in (2, 4, 8):
        ddp = wire_bytes(arch, setup, n, "ddp")
        ratio = {s: wire_bytes(arch, setup, n, s) / ddp for s in STRATEGIES}
        assert ratio["zero2"] == pytest.approx(1.0, abs=0.01) and ratio["fsdp"] == pytest.approx(1.5, abs=0.01)
        assert ratio["zero1"] == pytest.approx(1.5, abs=1e-9)
        assert wire_bytes(arch, setup, n, "fsdp", gather_elem=2) / ddp == pytest.approx(1.0, abs=0.01)
    payload = {s: sum(communication_bytes(arch, setup, 2, s).values()) for s in STRATEGIES}
    assert payload["fsdp"] / payload["ddp"] == pytest.approx(3.0, abs=0.02)
    with pytest.raises(ArgumentError, match="gather_elem=3"):
        communication_bytes(arch, setup, 2, "fsdp", gather_elem=3)


def test_token_count_averaging_is_the_whole_batch_without_processes():
    """Two ranks simulated in one process: each rank's token_mean_loss with the count of both
    ranks' labelled tokens, gradients averaged as an all-reduce would, equals the whole batch's
    gradient; the mean of the ranks' own mean losses does not."""
    import torch
    from ftlab.distributed.scratch import IGNORE_INDEX, flat_gradients, labelled_tokens, token_mean_loss
    from ftlab.setup.models import load_model
    model, _ = load_model(RunConfig(model="tiny", lora_r=0))
    ids = torch.randint(0, 200, (4, 24), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:2, :18] = IGNORE_INDEX  # rank 0's rows: long prompts; rank 1's: short ones
    labels[2:, :3] = IGNORE_INDEX
    halves = [{"input_ids": ids[i:i + 2], "labels": labels[i:i + 2]} for i in (0, 2)]
    model(input_ids=ids, labels=labels).loss.backward()
    whole = flat_gradients(model)
    model.zero_grad(set_to_none=True)
    total = sum(labelled_tokens(h["labels"]) for h in halves)
    assert total == labelled_tokens(labels) and labelled_tokens(halves[0]["labels"]) < labelled_tokens(halves[1]["labels"])
    averaged = {}
    for name, loss_of in (("token_mean", lambda h: token_mean_loss(model, h, total, 2)),
                          ("mean_of_means", lambda h: model(**h).loss)):
        grads = []
        for half in halves:
            loss_of(half).backward()
            grads.append(flat_gradients(model))
            model.zero_grad(set_to_none=True)
        averaged[name] = (grads[0] + grads[1]) / 2
    assert (averaged["token_mean"] - whole).abs().max() <= 1e-6
    assert (averaged["mean_of_means"] - whole).abs().max() > 1e-3 * whole.abs().max()


def test_the_zero_papers_rule_and_strategy_names():
    psi = 7_000_000_000
    assert zero_paper_bytes(psi, 8, 3) == 16 * psi / 8 and zero_paper_bytes(psi, 8, 0) == 16 * psi
    assert zero_paper_bytes(psi, 8, 1) == 4 * psi + 12 * psi / 8 and zero_paper_bytes(psi, 8, 2) == 2 * psi + 14 * psi / 8
    with pytest.raises(ArgumentError, match="stage=4"):
        zero_paper_bytes(psi, 8, 4)
    for row in devices_needed():
        for s in STRATEGIES:  # the paper's rule counts model states only: never more GPUs than ftlab's need
            assert row[f"full_{s}"] is None or (row[f"paper_{s}"] is not None and row[f"paper_{s}"] <= row[f"full_{s}"])
    assert "SHARD_GRAD_OP" in STRATEGIES["zero2"] and "replicated" in STRATEGIES["zero2"]
    assert "FULL_SHARD" in STRATEGIES["fsdp"] and "ZeRO-3" in STRATEGIES["fsdp"]
