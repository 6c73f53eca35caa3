"""Shared fixtures. Tests use the tiny preset (byte-level, ~1.5M parameters) unless a test
is about the real SmolLM2 model; finished runs go to a temp folder, never the user's cache."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # as in a kernel (ftlab.foundation.jupyter), set before its import
from ftlab import RunConfig  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub, even where one is reachable
# two cores: one thread per test process when `make test` runs two workers (pytest-xdist), else two
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(scope="session")
def addition_jsonl(tmp_path_factory) -> Path:
    """A small learnable data set: '<a> plus <b>?' -> the sum."""
    path = tmp_path_factory.mktemp("data") / "add.jsonl"
    with path.open("w") as fh:
        for i in range(240):
            a, b = i % 17, (i * 7) % 13
            fh.write(json.dumps({"prompt": f"{a} plus {b}?", "response": str(a + b)}) + "\n")
    return path


@pytest.fixture()
def tiny_config(addition_jsonl) -> RunConfig:
    return RunConfig(model="tiny", dataset=str(addition_jsonl), system_prompt="", lora_r=0, learning_rate=3e-3,
                     max_steps=12, per_device_train_batch_size=8, max_seq_length=64, eval_steps=6,
                     eval_size=16, exact_match_size=4, max_new_tokens=4)
