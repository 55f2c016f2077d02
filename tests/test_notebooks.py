"""Every numbered notebook runs headless under params/smoke.yaml, in order, and writes its metrics.

The smoke profile writes only under runs/smoke/ (never the committed reports/ or figures/).
"""
import json

import pytest

from surgvqa.config import REPO_ROOT, Config
from surgvqa.pipeline import numbered_notebooks, run_pipeline

SMOKE = REPO_ROOT / "params" / "smoke.yaml"
# What each notebook must report (tests read the numbers back).
EXPECTED_METRICS = {
    "00_graft": {"audio_tokens_3s", "trainable_params", "frozen_params"},
    "01_data_eda_stratification": {"split_rows", "class_balance", "audio_seconds", "leakage_checks"},
}
METRICS_FILE = {"00_graft": "00_graft", "01_data_eda_stratification": "01_data"}


@pytest.fixture(scope="session")
def smoke_run():
    cfg = Config.from_yaml(SMOKE)
    assert cfg.reports_dir != REPO_ROOT / "reports" and cfg.figures_dir != REPO_ROOT / "figures"
    timings = run_pipeline(SMOKE)
    return cfg, timings


@pytest.mark.parametrize("notebook", [p.stem for p in numbered_notebooks()])
def test_notebook_runs_under_smoke_params(smoke_run, notebook):
    cfg, timings = smoke_run
    assert notebook + ".ipynb" in [t["notebook"] for t in timings]
    assert (cfg.reports_dir / f"{notebook}.html").stat().st_size > 10_000
    payload = json.loads((cfg.metrics_dir / f"{METRICS_FILE.get(notebook, notebook)}.json").read_text())
    assert payload["params"]["profile"] == "smoke" and payload["params_hash"] == cfg.params_hash()
    missing = EXPECTED_METRICS.get(notebook, set()) - set(payload["metrics"])
    assert not missing, f"{notebook} metrics lack {missing}"


def test_graft_notebook_numbers(smoke_run):
    cfg, _ = smoke_run
    metrics = json.loads((cfg.metrics_dir / "00_graft.json").read_text())["metrics"]
    assert 0 < metrics["audio_tokens_3s"] <= 40
    assert metrics["frozen_params"] > metrics["trainable_params"] > 0
    assert metrics["max_logit_change_before_audio"] == 0.0 < metrics["min_logit_change_after_audio"]
    assert metrics["max_logit_diff_vs_stock"] == 0.0 and metrics["same_generation_as_stock"]
    graft_dir = cfg.checkpoints_dir / "graft"
    assert (graft_dir / "model.safetensors").exists() and (graft_dir / "processor_config.json").exists()
    assert (cfg.figures_dir / "00_audio_tokens_vs_seconds.png").exists()
