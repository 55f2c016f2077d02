"""A crash loses nothing (issue 12): real processes killed with SIGKILL, then rerun.

* a smoke-profile data build killed mid-way leaves no half-written file that a rerun would trust:
  the stamp (`dataset.json`) is absent, every file at a final name is whole, and the rerun rebuilds
  files identical to an uninterrupted build;
* a training stage run as a subprocess and SIGKILLed mid-epoch, then rerun, ends with the same final
  weights as an uninterrupted run (and a checkpoint whose save was cut short is never resumed from).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from surgvqa import checkpoints, datastep, trainer
from surgvqa.audio import load_audio
from surgvqa.config import REPO_ROOT, Config

SMOKE = REPO_ROOT / "params" / "smoke.yaml"
# the subprocesses run this checkout's code, installed or not
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
       "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "lib"), str(REPO_ROOT / "transformers_fork"),
                                      os.environ.get("PYTHONPATH", "")])}


def _params(tmp_path: Path, name: str, **sections) -> Path:
    params = yaml.safe_load(SMOKE.read_text())
    params["run_root"] = str(tmp_path / name)
    params.update(sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    """SIGKILL `proc` as soon as `ready()` holds (polled); fail if it ends or times out first."""
    start = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (rc {proc.returncode}) before the kill point:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() - start > timeout:
            proc.kill()
            pytest.fail("kill point not reached in time")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


# ---- the data step -----------------------------------------------------------------------------------

# Kills itself while `point` is being written (3 rows in), or runs to the end when point is "-".
DATA_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from surgvqa import datastep
    from surgvqa.config import Config

    cfg, point = Config.from_yaml(sys.argv[1]), sys.argv[2]
    write = datastep.write_jsonl

    def dying(path, rows):
        if Path(path).name != point:
            return write(path, rows)
        def rows_then_kill():
            for i, row in enumerate(rows):
                if i == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield row
        return write(path, rows_then_kill())

    datastep.write_jsonl = dying
    datastep.build_dataset(cfg)
""")


def _data_files(data_dir: Path) -> dict[str, bytes]:
    names = ["in_template.jsonl", "out_template.jsonl", "speech_corpus.jsonl", "splits/train.jsonl",
             "splits/val.jsonl", "splits/test.jsonl"]
    return {n: (data_dir / n).read_bytes() for n in names}


def _assert_nothing_half_written(data_dir: Path) -> None:
    """What a rerun could reuse is whole: the stamp is gone, no JSONL sits half-written at a final
    name (they are written to a temp name and renamed), every cached wav at a final name loads."""
    assert not (data_dir / "dataset.json").exists(), "a killed build left a stamp a rerun would trust"
    for wav in (data_dir / "audio").glob("*.wav"):
        load_audio(wav)  # raises AudioError on a truncated file


# One in-process engine: what is tested is how files are written, not which engines speak (tests/test_speech.py).
ESPEAK_ONLY = {**yaml.safe_load(SMOKE.read_text())["data"], "voice_engines": ["espeak"], "heldout_engine": None}


@pytest.fixture(scope="module")
def uninterrupted_data(tmp_path_factory) -> dict[str, bytes]:
    """The files of an uninterrupted smoke data build: built once, compared with each killed build's rerun."""
    reference = Config.from_yaml(_params(tmp_path_factory.mktemp("faults"), "reference", data=ESPEAK_ONLY))
    datastep.build_dataset(reference)
    return _data_files(reference.paths.data)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["speech", "train.jsonl", "speech_corpus.jsonl"])
def test_killed_data_build_leaves_nothing_a_rerun_would_trust(tmp_path, point, uninterrupted_data):
    expected = uninterrupted_data
    params = _params(tmp_path, "killed", data=ESPEAK_ONLY)
    cfg = Config.from_yaml(params)
    audio = cfg.paths.data / "audio"
    cmd = [sys.executable, "-c", DATA_SCRIPT, str(params), point if point != "speech" else "-"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if point == "speech":  # killed from outside while the questions are being spoken
        _kill_when(proc, lambda: audio.is_dir() and sum(1 for _ in audio.glob("*.wav")) >= 40)
    else:
        proc.wait(240)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-3000:]
        assert not (cfg.paths.data / ("splits" if point == "train.jsonl" else "") / point).exists()
    _assert_nothing_half_written(cfg.paths.data)

    assert datastep.ensure_dataset(cfg) is not None, "the rerun trusted a killed build"
    assert _data_files(cfg.paths.data) == expected
    assert not [p for p in cfg.paths.data.rglob("*") if ".tmp" in p.name], "temp files of the killed build remain"
    assert datastep.ensure_dataset(cfg) is None  # now whole: reused
    datastep.load_run_data(cfg, build=False)


# ---- a training stage ----------------------------------------------------------------------------------


def test_a_checkpoint_cut_short_is_never_resumed_from(tmp_path):
    """Trainer writes trainer_state.json last: a newer folder without it is a save that was killed."""
    for step, whole in ((2, True), (4, True), (6, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if whole:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "stamp.txt").write_text("s")
    assert trainer.resume_checkpoint(tmp_path, "s", resume=True) == str(tmp_path / "checkpoint-4")
    shutil.rmtree(tmp_path / "checkpoint-2")
    shutil.rmtree(tmp_path / "checkpoint-4")
    assert trainer.resume_checkpoint(tmp_path, "s", resume=True) is None  # nothing whole: start over


@pytest.mark.slow
def test_sigkilled_training_stage_reruns_to_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    stage0 = {"num_train_epochs": 2, "per_device_train_batch_size": 1, "eval_strategy": "no",  # enough steps to kill
              "save_strategy": "steps", "save_steps": 2, "logging_steps": 1}                    # mid-epoch
    params = _params(tmp_path, "runs", data=ESPEAK_ONLY, train={"stage0": stage0, "stage0_refine": {}})
    cfg = Config.from_yaml(params)
    datastep.load_run_data(cfg)  # the data step once, up front (not what is being killed here)
    out = checkpoints.stage_dir(cfg, "stage0")
    cmd = [sys.executable, "-m", "surgvqa.train", "--params", str(params), "--stage", "stage0"]

    def run(*extra) -> subprocess.Popen:
        return subprocess.Popen(cmd + list(extra), cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    done = run("--no-resume")
    stdout, stderr = done.communicate(timeout=600)
    assert done.returncode == 0, stderr[-3000:]
    uninterrupted = load_file(out / "final" / "model.safetensors")
    steps = checkpoints.StageResult.load(out).global_step
    assert steps >= 8, f"too few steps ({steps}) to kill mid-epoch"

    killed = run("--no-resume")  # starts over, then dies mid-epoch 1 (a checkpoint every 2 steps)
    _kill_when(killed, lambda: (out / "checkpoint-4" / "trainer_state.json").is_file(), timeout=600)
    assert not (out / "final").exists() and not (out / "stage.json").exists()

    resumed = run()
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]
    result = checkpoints.StageResult.load(out)
    assert result.resumed_from and Path(result.resumed_from).name.startswith("checkpoint-"), result.resumed_from
    assert int(Path(result.resumed_from).name.split("-")[1]) < steps and result.global_step == steps
    final = load_file(out / "final" / "model.safetensors")
    assert final.keys() == uninterrupted.keys()
    diff = max(float((final[k].float() - uninterrupted[k].float()).abs().max()) for k in final)
    assert diff < 1e-5, f"the rerun after SIGKILL differs from the uninterrupted run by {diff}"
