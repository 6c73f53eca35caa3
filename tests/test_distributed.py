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
                          gathered_bytes, model_architecture, setup_for, shard_rows)
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
    assert len(stopped) == 1 and stopped[0] < 0  # then stopped: ended by a signal, not by finishing
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
    rows = {(r["model"], r["gpu_gib"]): r for r in devices_needed()}
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
    # loaded in bf16, a 7B LoRA fits one 24 GiB card, and some count of 24 GiB cards trains a 70B
    bf16 = {(r["model"], r["gpu_gib"]): r for r in devices_needed(weights="bfloat16")}
    assert bf16["7B", 24]["answer"].startswith("LoRA on one GPU") and bf16["70B", 24]["full_fsdp"] is not None
    per_gpu = {r["method"]: r for r in fits_table(model_sizes=("7B",), devices=rows["7B", 80]["full_fsdp"], strategy="fsdp")}
    assert per_gpu["full"]["fits_80GiB"] and "qlora" not in per_gpu  # NF4 weights are not sharded


def test_cli_estimate_and_fits_take_devices_and_strategy(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_CACHE", str(tmp_path))
    assert main(["estimate", "--model", "tiny", "--method", "full", "--batch", "2", "--seq", "32", "--devices", "2",
                 "--strategy", "fsdp"]) == 0
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
