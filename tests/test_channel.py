"""Training audio through a random room, microphone and codec: seeded, recorded, training pools only."""
from __future__ import annotations


import numpy as np
import pytest

from surgvqa import channel, datastep, speech
from surgvqa.audio import load_audio
from surgvqa.config import REPO_ROOT, Config, ConfigError


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    return speech.synthesize_to_file("is there blue dye visible in the clip", speech.VOICES[0],
                                     tmp_path_factory.mktemp("channel_src"))


@pytest.mark.parametrize("codec", channel.CODECS)
def test_a_channel_changes_the_sound_but_keeps_the_speech(spoken, codec):
    clean = load_audio(spoken)
    params = {**channel.draw(np.random.default_rng(3)), "codec": codec, "stretch": 1.1}
    heard = channel.apply(clean, params)
    assert heard.dtype == np.float32 and np.abs(heard).max() <= 1.0
    # 10% slower speech is about 10% longer (codecs add a few ms of delay)
    assert 1.05 < len(heard) / len(clean) < 1.2
    assert np.sqrt(np.mean(heard ** 2)) > 1e-3  # still audible
    n = min(len(clean), len(heard))
    assert not np.allclose(heard[:n], clean[:n], atol=1e-3)


def test_channel_copy_is_seeded_by_file_and_cached(spoken, tmp_path):
    a, pa = channel.channel_copy(spoken, tmp_path, seed=0)
    b, pb_ = channel.channel_copy(spoken, tmp_path, seed=0)
    c, pc = channel.channel_copy(spoken, tmp_path, seed=1)
    assert a == b and pa == pb_ and a.is_file()
    assert pc != pa and c != a
    with pytest.raises(ValueError, match="codec 'opus'"):
        channel.apply(load_audio(spoken), {**pa, "codec": "opus"})


def test_chosen_share_is_about_the_share_asked():
    picks = [channel.chosen(0, f"voice-{i:04x}.wav", 0.3) for i in range(2000)]
    assert 0.26 < np.mean(picks) < 0.34
    assert not any(channel.chosen(0, f"voice-{i:04x}.wav", 0.0) for i in range(200))


def test_augment_share_is_checked():
    with pytest.raises(ConfigError, match="augment_share"):
        Config.from_yaml(REPO_ROOT / "params" / "smoke.yaml", overrides={"data": {"augment_share": 1.5}})


def test_only_training_pools_hear_channels(tmp_path):
    cfg = Config.from_yaml(REPO_ROOT / "params" / "smoke.yaml",  # espeak alone: channels apply to any engine's audio
                           overrides={"data": {"augment_share": 0.5, "voice_engines": ["espeak"], "heldout_engine": None}})
    datastep.build_dataset(cfg, out_dir=tmp_path)
    run = datastep.load_run_data(cfg, data_dir=tmp_path)
    train = list(run.splits["train"].rows)
    heard = [r for r in train if r.get("channel")]
    assert 0.2 < len(heard) / len(train) < 0.8
    for r in heard:  # recorded: where it came from and how it was changed
        assert r["audio"].startswith("audio_channel/") and r["spoken_audio"].startswith("audio/")
        assert set(r["channel"]) == {"stretch", "semitones", "room_size", "reverb_wet", "highpass_hz",
                                     "lowpass_hz", "gain_db", "codec"}
    for name, ds in run.splits.items():
        if name != "train":
            assert not any(r.get("channel") for r in ds.rows), name
    for e in run.corpus:
        assert bool(e.get("channel")) <= (e["split"] == "train"), e["id"]
    assert any(e.get("channel") for e in run.corpus)
