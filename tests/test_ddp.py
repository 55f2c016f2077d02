"""A real 2-process DDP run (gloo, CPU) of training stage 0 through `accelerate launch`.

Why `--config_file params/accelerate/cpu_2proc.yaml` plus ACCELERATE_USE_CPU=true and not
`accelerate launch --cpu --num_processes 2`: with `--cpu` accelerate's simple launcher starts ONE
process on a single machine (several CPU processes need mpirun). The config uses the torchrun
launcher (distributed_type MULTI_GPU), and ACCELERATE_USE_CPU=true makes Trainer's PartialState
pick MULTI_CPU + gloo; without it both processes train independently on all the data
("torch.distributed process group is initialized, but parallel_mode != ParallelMode.DISTRIBUTED")
while still printing world_size 2, which is why the step count is the assertion that matters.

Runs under its own profile in a temp run root, never the repository's runs/.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from surgvqa.datastep import load_run_data
from surgvqa.config import REPO_ROOT, Config

pytestmark = pytest.mark.slow  # builds grafts and trains (minutes)

PROFILE = "smoke_ddp"
WORLD = 2
BATCH = 1  # one conversation per batch: the smoke clips give 1 and 2 processes different step counts
EPOCHS = 1


@pytest.fixture
def ddp_params(tmp_path) -> Path:
    params = yaml.safe_load((REPO_ROOT / "params" / "smoke.yaml").read_text())
    params["profile"] = PROFILE
    params["run_root"] = str(tmp_path / "runs")
    params["data"].update(voice_engines=["espeak"], heldout_engine=None)  # what is tested is the training, not the voices
    params["train"] = {"stage0": {"num_train_epochs": EPOCHS, "per_device_train_batch_size": BATCH},
                       "stage1": {"num_train_epochs": EPOCHS}, "stage0_refine": {}}
    path = tmp_path / "smoke_ddp.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    cfg = Config.from_yaml(path)
    assert cfg.paths.run == tmp_path / "runs" / PROFILE
    # Multi-process runs never build data (`python -m surgvqa.train` requires it on disk): build it here, once.
    load_run_data(cfg)
    return path


def test_stage0_two_process_ddp(ddp_params):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(REPO_ROOT / "params" / "accelerate" / "cpu_2proc.yaml"), "--num_processes", str(WORLD),
           "-m", "surgvqa.train", "--params", str(ddp_params), "--stage", "stage0", "--no-resume"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout[-4000:] + "\n--- stderr ---\n" + proc.stderr[-8000:]
    assert proc.returncode == 0, log
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in proc.stderr, log

    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith('{"stage"')]
    assert [x["stage"] for x in lines] == ["stage0"], log  # printed once, by rank 0 only
    assert lines[0]["world_size"] == WORLD

    out = Config.from_yaml(ddp_params).paths.stage("stage0")
    assert (out / "final" / "model.safetensors").is_file()
    assert (out / "stage.json").is_file()
    stage = json.loads((out / "stage.json").read_text())

    # Trainer under DDP: the batch sampler (ceil(N / B) batches of the whole set) is sharded by
    # accelerate with even_batches -> ceil(ceil(N / B) / W) = ceil(N / (W * B)) batches per process
    # and epoch; gradient_accumulation_steps = 1 -> that many optimizer steps per epoch.
    n = stage["train_examples"]
    expected = math.ceil(EPOCHS * math.ceil(n / (WORLD * BATCH)))
    single = math.ceil(EPOCHS * math.ceil(n / BATCH))
    assert expected != single, "choose sizes where 1 and 2 processes give different step counts"
    assert stage["global_step"] == lines[0]["global_step"] == expected, (stage["global_step"], expected, single)
    assert stage["epochs"] == EPOCHS
    # Both ranks took part in the checkpoint (one RNG state each).
    checkpoint = out / f"checkpoint-{expected}"
    assert sorted(p.name for p in checkpoint.glob("rng_state_*.pth")) == [f"rng_state_{r}.pth" for r in range(WORLD)]
