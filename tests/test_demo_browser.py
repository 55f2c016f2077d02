"""The demo app in a real browser: headless Chromium (the Debian package, driven by playwright) with its fake
microphone playing a spoken test question. The page records, asks, and must show what `Assistant.ask` answers
to the very audio it recorded, about the clip it shows. Skipped, with the reason, where Chromium or playwright
is missing (`.ci/run` installs Chromium)."""
from __future__ import annotations

import importlib.util

import numpy as np

import pytest

from browser_harness import chromium_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="no Chromium on PATH (Debian: apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright is not installed (pip)"),
]


def test_voice_question_in_the_browser_is_answered_as_the_api_answers(smoke_trained, tmp_path):
    from surgvqa import datastep, demo
    from surgvqa.assistant import Assistant
    from surgvqa.config import shown_path
    from browser_harness import DemoServer, ask_by_voice

    cfg = smoke_trained
    test = datastep.load_run_data(cfg, build=False).splits["test"]
    row = next(r for r in test.rows if r.get("group") == "heldout_voice" and r.get("audio"))
    with DemoServer(shown_path(cfg.params_source), str(cfg.paths.run.parent), log=tmp_path / "voila.log") as server:
        seen = ask_by_voice(server.url, test.audio_path(row), seconds=3.0, screenshot=tmp_path / "demo.png")
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert len(seen.heard) > 44 + 2 * 8_000  # a WAV of more than half a second: the microphone really recorded

    heard = tmp_path / "heard.wav"
    heard.write_bytes(seen.heard)
    frames = demo.clip_choices(test)[seen.clip]  # the clip the page shows (its first, by default)
    assistant = Assistant.from_config(cfg)
    expected = assistant.ask(audio=heard, frames=frames)
    assert seen.graft_answer == expected.answer
    assert seen.graft_transcript == expected.transcript
    asr = assistant.ask_asr(heard, frames)
    assert (seen.asr_answer, seen.asr_transcript) == (asr.answer, asr.transcript)
    assert "Traceback" not in seen.page_text


def test_the_page_shows_a_message_for_a_run_without_checkpoints(smoke_trained, tmp_path):
    """(Silence, broken videos and the like are checked on the app's handlers in test_assistant.py.)"""
    from surgvqa.audio import write_wav
    from surgvqa.config import Config, shown_path
    from browser_harness import DemoServer, PageError, ask_by_voice

    cfg = smoke_trained
    wav = write_wav(tmp_path / "q.wav", np.full(16_000, 0.1, np.float32))
    Config.from_yaml(cfg.params_source, {"run_root": str(tmp_path / "runs")}).paths.make()
    with DemoServer(shown_path(cfg.params_source), str(tmp_path / "runs"), log=tmp_path / "voila.log") as server:
        with pytest.raises(PageError, match="no trained checkpoints") as err:
            ask_by_voice(server.url, wav, seconds=1.0)
    assert "Traceback" not in str(err.value)
