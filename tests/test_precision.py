"""The precision every run gets follows what the machine can do, decided in one place
(ftlab.config.precision), and the device check refuses what a machine cannot run.

The machines are simulated: :class:`Capabilities` is plain data, so a T4, an A100, a Mac and
CPUs with and without native bf16 are one line each (``tests/test_doctor.py`` uses them too).
"""
from __future__ import annotations

import tempfile
import warnings

import pytest
from transformers import Trainer

import ftlab.config.profiles as profiles
import ftlab.setup.models as models
import ftlab.training.arguments as train_module
from ftlab.config.precision import Capabilities, choose_precision, cpu_native_bf16, probe
from ftlab.config.profiles import base_config, knob_config, profile_name
from ftlab.config.run_config import OPTIMIZERS, RunConfig
from ftlab.errors import ConfigError, DeviceError, ModelNotFoundError
from ftlab.memory import GiB, estimate, model_architecture, setup_for, transient_bytes
from ftlab.memory.fits import HEADROOM
from ftlab.config.optimizers import BITSANDBYTES_OPTIMIZERS
from ftlab.setup.models import check_device

T4 = Capabilities(device="cuda", device_name="Tesla T4", device_memory=15_828_320_256, cuda_bf16=False,
                  cpu_bf16=False, cpu_capability="AVX2", ram=13 * GiB)
A100 = Capabilities(device="cuda", device_name="NVIDIA A100-SXM4-40GB", device_memory=42_298_834_944, cuda_bf16=True,
                    cpu_bf16=False, cpu_capability="AVX2", ram=85 * GiB)
MAC = Capabilities(device="mps", device_name="Apple MPS", device_memory=11 * GiB, cpu_capability="DEFAULT", ram=16 * GiB)
CPU_BF16 = Capabilities(device="cpu", device_name="AMD EPYC 9R14", cpu_bf16=True, cpu_capability="AVX512", ram=16 * GiB)
CPU_NO_BF16 = Capabilities(device="cpu", device_name="AMD EPYC", cpu_bf16=False, cpu_capability="AVX2", ram=23 * GiB)
CPU_UNKNOWN = Capabilities(device="cpu", device_name="Intel64 Family 6", cpu_bf16=None, cpu_capability="AVX2")
MACHINES = {"T4": T4, "A100": A100, "MPS": MAC, "CPU with bf16": CPU_BF16, "CPU without bf16": CPU_NO_BF16,
            "CPU, bf16 unknown": CPU_UNKNOWN}

EXPECTED = [  # machine, profile, model, (bf16, fp16)
    ("T4", "gpu", "smollm2-135m", (False, True)),
    ("A100", "gpu", "smollm2-135m", (True, False)),
    ("MPS", "cpu", "smollm2-135m", (False, False)),
    ("CPU with bf16", "cpu", "smollm2-135m", (True, False)),
    ("CPU with bf16", "cpu", "HuggingFaceTB/SmolLM2-360M-Instruct", (True, False)),
    ("CPU with bf16", "cpu", "tiny-pretrained", (False, False)),
    ("CPU with bf16", "cpu", "tiny", (False, False)),
    ("CPU without bf16", "cpu", "smollm2-135m", (False, False)),
    ("CPU, bf16 unknown", "cpu", "smollm2-135m", (False, False)),
]


@pytest.mark.parametrize("machine, profile, model, expected", EXPECTED, ids=[f"{m}-{p}-{mo}" for m, p, mo, _ in EXPECTED])
def test_the_precision_follows_the_capability(machine, profile, model, expected):
    precision = choose_precision(MACHINES[machine], profile, model)
    assert (precision.bf16, precision.fp16) == expected
    assert precision.reason and precision.name == {(True, False): "bf16 autocast", (False, True): "fp16 autocast with "
                                                   "loss scaling", (False, False): "fp32"}[expected]


@pytest.mark.parametrize("machine", MACHINES)
def test_the_ci_profile_is_fp32_on_every_machine(machine):
    assert choose_precision(MACHINES[machine], "ci", "smollm2-135m").fields() == {"bf16": False, "fp16": False}


@pytest.fixture
def machine(monkeypatch):
    """Make the profiles (and the device check) see a simulated machine."""
    def use(caps: Capabilities) -> None:
        monkeypatch.setattr(profiles, "probe", lambda: caps)
        monkeypatch.setattr(models, "probe", lambda: caps)
    return use


def test_the_profiles_apply_the_choice(machine):
    machine(CPU_BF16)
    assert base_config("cpu").bf16 and not knob_config("cpu").bf16  # SmolLM2 vs tiny-pretrained
    machine(CPU_NO_BF16)
    assert not base_config("cpu").bf16
    machine(T4)
    assert base_config("gpu").fp16 and knob_config("gpu").fp16 and not base_config("gpu").bf16
    machine(A100)
    assert base_config("gpu").bf16 and knob_config("gpu").bf16
    assert not base_config("ci").bf16 and not knob_config("ci").bf16


def test_a_chapter_that_sets_precision_itself_wins(machine):
    machine(CPU_BF16)
    assert base_config("cpu", bf16=False).bf16 is False
    machine(T4)
    config = base_config("gpu", bf16=True)  # no "choose one of bf16 and fp16" from the profile's fp16
    assert config.bf16 and not config.fp16
    assert knob_config("gpu", fp16=False).fp16 is False


def test_the_profile_follows_the_device_and_the_environment():
    assert profile_name({}, T4) == "gpu"
    assert profile_name({}, MAC) == "cpu"  # an Apple GPU runs the laptop workload
    assert profile_name({"FTLAB_PROFILE": " CI "}, A100) == "ci"
    with pytest.raises(ConfigError, match="FTLAB_PROFILE='gpux'"):
        profile_name({"FTLAB_PROFILE": "gpux"}, CPU_NO_BF16)


@pytest.mark.parametrize("config", [dict(lora_r=0), dict(lora_r=8)], ids=["full", "lora"])
def test_the_gpu_workload_fits_a_15_gb_card(machine, config):
    """The gpu profile's run (SmolLM2-135M, batch 16 x 128), predicted in fp32 (fp16 autocast
    saves less, so fp32 bounds it), with backward's transient buffers, fits a T4 with the
    headroom ftlab fits keeps."""
    machine(T4)
    cfg = base_config("gpu", model="smollm2-135m", **config)
    try:
        arch = model_architecture(cfg.model)
    except ModelNotFoundError as err:  # the offline weights are not installed
        pytest.skip(str(err))
    need = estimate(cfg.replace(fp16=False), device="cuda").total + transient_bytes(
        arch, setup_for(cfg, device="cuda"), cfg.per_device_train_batch_size, cfg.max_seq_length)
    assert need <= (1 - HEADROOM) * T4.device_memory, f"{need / GiB:.1f} GiB"


CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 {extra}\nbogomips\t: 4792.81\n"


@pytest.mark.parametrize("text, machine, expected", [
    (CPUINFO.format(extra="avx512f avx512_bf16"), "x86_64", True),
    (CPUINFO.format(extra="amx_tile amx_bf16"), "x86_64", True),
    (CPUINFO.format(extra="avx512f avx512bw"), "x86_64", False),  # AVX-512 without its bf16 extension
    (CPUINFO.format(extra=""), "AMD64", False),
    ("Features\t: fp asimd bf16\n", "aarch64", None),  # another architecture: not read
    (None, "x86_64", None),  # no /proc/cpuinfo (macOS, Windows)
    ("processor\t: 0\n", "x86_64", None),
])
def test_native_bf16_is_read_from_the_cpu_flags(text, machine, expected):
    assert cpu_native_bf16(text, machine) is expected


def test_the_probe_describes_this_machine():
    caps = probe()
    assert caps.device in ("cuda", "mps", "cpu") and caps.cpu_capability
    assert caps.ram is None or caps.ram > GiB
    with pytest.raises(ValueError, match="device='tpu'"):
        Capabilities(device="tpu")


# --- the device check ----------------------------------------------------------------------------


@pytest.mark.parametrize("change, match", [
    (dict(load_in_4bit=True), r"load_in_4bit=True quantizes with bitsandbytes.*load_in_4bit=False, lora_r > 0"),
    (dict(load_in_8bit=True), r"load_in_8bit=True quantizes with bitsandbytes.*CUDA GPU"),
    (dict(optim="adamw_8bit"), r"optim='adamw_8bit' comes from bitsandbytes.*'adamw_torch'.*'adafactor'"),
    (dict(optim="lion_32bit"), r"optim='lion_32bit' comes from bitsandbytes"),
    (dict(optim="paged_adamw_8bit"), r"needs CUDA; on MPS use 'adafactor'"),
])
def test_bitsandbytes_options_are_refused_on_apple_mps_naming_the_alternative(change, match):
    config = RunConfig(model="tiny", **change)
    with pytest.raises(DeviceError, match=match):
        check_device(config, MAC)
    check_device(config, T4)  # the same config is fine on CUDA


def test_mps_runs_lora_fp16_and_torch_optimizers():
    for config in (RunConfig(model="tiny", fp16=True), RunConfig(model="tiny", optim="adafactor")):
        check_device(config, MAC)


def test_a_cpu_refuses_fp16_and_warns_once_about_emulated_bf16():
    with pytest.raises(DeviceError, match="fp16=True needs a CUDA GPU.*this one: no native bf16"):
        check_device(RunConfig(model="tiny", fp16=True), CPU_NO_BF16)
    models._warn_emulated_bf16.cache_clear()
    with pytest.warns(UserWarning, match="bf16 is emulated"):
        check_device(RunConfig(model="tiny", bf16=True), CPU_UNKNOWN)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_device(RunConfig(model="tiny", bf16=True), CPU_UNKNOWN)  # said once is enough
        check_device(RunConfig(model="tiny", bf16=True), CPU_BF16)


def test_the_bitsandbytes_optimizers_are_those_trainer_takes_from_bitsandbytes():
    with tempfile.TemporaryDirectory() as out:
        from_bnb = set()
        for optim in OPTIMIZERS:
            args = train_module.training_arguments(RunConfig(model="tiny", optim=optim), out)
            cls, _ = Trainer.get_optimizer_cls_and_kwargs(args)
            if cls.__module__.startswith("bitsandbytes"):
                from_bnb.add(optim)
    assert from_bnb == BITSANDBYTES_OPTIMIZERS


@pytest.mark.parametrize("caps, use_cpu", [(CPU_NO_BF16, True), (MAC, False)], ids=["cpu", "mps"])
def test_trainer_trains_on_the_device_there_is(monkeypatch, caps, use_cpu):
    monkeypatch.setattr(train_module, "probe", lambda: caps)
    with tempfile.TemporaryDirectory() as out:
        assert train_module.training_arguments(RunConfig(model="tiny"), out).use_cpu is use_cpu
