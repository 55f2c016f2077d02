"""Fixtures shared across test modules, and how `make test` spreads the modules over its workers."""
import fcntl
import os
from functools import cache
from pathlib import Path

import pytest

SMOKE_FIXTURES = ("smoke_run", "smoke_trained")


@cache
def uses_the_smoke_run(test_file: Path) -> bool:
    """Whether a test module asks for the session's smoke pipeline (read from its source: the controller that
    schedules the modules does not collect them)."""
    source = test_file.read_text()
    return any(name in source for name in SMOKE_FIXTURES)


@pytest.hookimpl(optionalhook=True)  # xdist's hook: absent when pytest runs without it
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with one change: every module that uses the smoke pipeline goes to the same worker, so the
    pipeline runs once per session rather than once per worker. (xdist's own `loadgroup` cannot be told this from a
    conftest under pytest 9.2: its group suffix no longer reaches the scheduler, pytest-dev/pytest-xdist#1386.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ModulesAndTheSmokeRun(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = super()._split_scope(nodeid)
            return "smoke_run" if uses_the_smoke_run(config.rootpath / module) else module

    return ModulesAndTheSmokeRun(config, log)


@pytest.fixture(scope="session")
def whisper_cache_dir(tmp_path_factory) -> Path:
    """A cache root private to this test session, so the conversion is really exercised."""
    return tmp_path_factory.mktemp("surgvqa-cache")


@pytest.fixture(scope="session")
def ct2_whisper_dir(whisper_cache_dir) -> Path:
    """The embedded whisper-base as a CTranslate2 folder (faster-whisper / ctranslate2 load it)."""
    from surgvqa.whisper_conversion import embedded_ct2_dir

    return embedded_ct2_dir(whisper_cache_dir)


@pytest.fixture(scope="session")
def embedded_whisper_dir(whisper_cache_dir, ct2_whisper_dir) -> Path:
    """The embedded whisper-base converted once per session to a HF folder (from_pretrained loads it)."""
    from surgvqa.whisper_conversion import EMBEDDED_WHISPER, resolve_whisper

    return Path(resolve_whisper(EMBEDDED_WHISPER, whisper_cache_dir))


SMOKE = Path(__file__).resolve().parents[1] / "params" / "smoke.yaml"


@pytest.fixture(scope="session")
def smoke_audio(tmp_path_factory):
    """`seed(data_dir)`: hard-links the smoke data step's spoken questions and corpus into `data_dir`'s audio cache,
    so a smoke data step built there synthesises nothing it already has (files are named by text and voice).
    They are synthesised once per test session: the first process to ask (of the xdist workers) builds them in the
    session's shared temp dir while the others wait on a lock."""
    from surgvqa import datastep
    from surgvqa.config import Config

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's temp dir, which holds every worker's
    built = shared / "smoke_audio_data"
    with open(shared / "smoke_audio.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (built / "dataset.json").is_file():
            datastep.build_dataset(Config.from_yaml(SMOKE), out_dir=built)

    def seed(data_dir: Path) -> Path:
        audio = Path(data_dir) / "audio"
        audio.mkdir(parents=True, exist_ok=True)
        for wav in (built / "audio").iterdir():
            if not (audio / wav.name).exists():
                os.link(wav, audio / wav.name)
        return Path(data_dir)

    return seed


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, smoke_audio):
    """The whole smoke pipeline, with its run directory (data, checkpoints, reports) in a temp dir;
    shared by the notebook tests and the assistant's tests (one run per session). Its data step starts with the
    session's smoke audio (`smoke_audio`)."""
    from surgvqa.config import REPO_ROOT, Config
    from surgvqa.pipeline import run_pipeline

    overrides = {"run_root": str(tmp_path_factory.mktemp("runs"))}
    cfg = Config.from_yaml(SMOKE, overrides)
    smoke_audio(cfg.paths.data)
    assert cfg.paths.run == Path(overrides["run_root"]) / "smoke"
    assert cfg.paths.reports != REPO_ROOT / "reports" and cfg.paths.figures != REPO_ROOT / "figures"
    timings = run_pipeline(SMOKE, overrides=overrides, executor="nbmake")
    return cfg, timings


@pytest.fixture(scope="session")
def smoke_trained(request):
    """The Config of a trained smoke run: the session's smoke pipeline, or (to iterate on one test file)
    an existing one named by SURGVQA_SMOKE_RUN_ROOT (its run_root, holding smoke/checkpoints)."""
    import os

    from surgvqa.config import Config

    root = os.environ.get("SURGVQA_SMOKE_RUN_ROOT")
    if root:
        cfg = Config.from_yaml(SMOKE, {"run_root": root})
        assert (cfg.paths.checkpoints / "stage2" / "merged").is_dir(), f"{root}: no trained smoke run there"
        return cfg
    return request.getfixturevalue("smoke_run")[0]
