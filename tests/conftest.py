"""Fixtures shared across test modules."""
from pathlib import Path

import pytest


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
