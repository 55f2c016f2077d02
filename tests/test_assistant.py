"""The `ask` API and CLI: clips from video files, folders and lists; bad input gets a message, not a traceback;
against a trained smoke run, the assistant answers as the evaluation does and the CLI as the API does."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from surgvqa import ask
from surgvqa.assistant import Assistant, AssistantError, check_checkpoints, find_config, question_audio
from surgvqa.audio import AudioError, write_wav
from surgvqa.config import REPO_ROOT, Config
from surgvqa.video import VideoError, read_clip, sample_indices, write_video

SMOKE = REPO_ROOT / "params" / "smoke.yaml"


def clip(n: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    """n frames whose brightness steps with the index (so a frame's position can be read back)."""
    noise = np.random.default_rng(seed).integers(0, 20, (n, size, size, 3))
    return (np.arange(n)[:, None, None, None] * (200 // n) + noise).astype(np.uint8)


def speech_like(seconds: float, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture
def fake_run(tmp_path):
    """A run folder as `make report` leaves it, minus the checkpoints: metrics/*.json with the params."""
    cfg = Config.from_yaml(SMOKE, {"run_root": str(tmp_path / "runs")})
    cfg.paths.make()
    cfg.write_metrics("00_graft", {"x": 1})
    return cfg.paths.run


# ---- clips ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mkv", ".avi"])
def test_lossless_video_decodes_to_the_same_frames_as_a_folder(tmp_path, suffix):
    frames = clip(8)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:02d}.png")
    video = write_video(tmp_path / f"clip{suffix}", frames, lossless=True)
    assert np.array_equal(read_clip(video), frames)
    assert np.array_equal(read_clip(folder), frames)
    assert np.array_equal(read_clip(sorted(folder.glob("*.png"))), frames)
    assert read_clip(video, size=16).shape == (8, 16, 16, 3)


def frame_index(frames: np.ndarray) -> list[int]:
    """Which frames of `clip(40)` these are (frame i has mean brightness 5 i + ~9.5)."""
    return [int(round((m - 9.5) / 5)) for m in frames.reshape(len(frames), -1).mean(axis=1)]


def test_longer_video_is_sampled_evenly_or_around_a_time(tmp_path):
    frames = clip(40, seed=1)
    assert frame_index(frames) == list(range(40))
    lossless = write_video(tmp_path / "long.mkv", frames, fps=10, lossless=True)
    assert frame_index(read_clip(lossless)) == [0, 6, 11, 17, 22, 28, 33, 39]
    assert frame_index(read_clip(lossless, at=3.0, span=1.0)) == [25, 26, 28, 29, 31, 32, 34, 35]  # 2.5 .. 3.5 s
    for suffix in (".mp4", ".mov"):  # lossy mpeg4: the same frames, nearly the same pixels
        decoded = read_clip(write_video(tmp_path / f"long{suffix}", frames, fps=10))
        assert decoded.shape == (8, 32, 32, 3)
        assert np.abs(decoded.astype(float) - frames[[0, 6, 11, 17, 22, 28, 33, 39]]).mean() < 12


def test_sample_indices():
    times = [i / 10 for i in range(40)]
    assert sample_indices(times, 8) == [0, 6, 11, 17, 22, 28, 33, 39]
    assert sample_indices(times, 8, at=0.0, span=0.2) == list(range(8))  # widened to the 8 nearest frames
    with pytest.raises(ValueError, match="outside the video"):
        sample_indices(times, 8, at=60.0)


def test_bad_clips_name_the_file_and_the_reason(tmp_path):
    short = write_video(tmp_path / "short.mp4", clip(5))
    with pytest.raises(VideoError, match=r"short\.mp4: the video has 5 frame\(s\); the model needs at least 8"):
        read_clip(short)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoError, match=r"garbage\.mp4: cannot decode the video"):
        read_clip(garbage)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(write_video(tmp_path / "ok.mp4", clip(20)).read_bytes()[:200])
    with pytest.raises(VideoError, match=r"truncated\.mp4"):
        read_clip(truncated)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no frames here")
    with pytest.raises(VideoError, match=r"empty: no images"):
        read_clip(empty)
    with pytest.raises(VideoError, match=r"missing\.mp4: video file not found"):
        read_clip(tmp_path / "missing.mp4")
    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        Image.fromarray(clip(1)[0]).save(few / f"{i}.png")
    with pytest.raises(VideoError, match=r"3 image\(s\) given; the model needs at least 8"):
        read_clip(few)


# ---- audio ----------------------------------------------------------------------------------------


def test_question_audio_refuses_silence_long_audio_and_odd_rates(tmp_path):
    ok = question_audio((speech_like(2.0, 44_100), 44_100))
    assert ok.dtype == np.float32 and abs(len(ok) - 32_000) <= 1
    with pytest.raises(AudioError, match="silent"):
        question_audio(write_wav(tmp_path / "silence.wav", np.zeros(32_000, np.float32)))
    with pytest.raises(AudioError, match=r"long\.wav: 31\.0 s of audio; a question must be at most 30 s"):
        question_audio(write_wav(tmp_path / "long.wav", speech_like(31.0)))
    with pytest.raises(AudioError, match="sample rate"):
        question_audio((speech_like(1.0), 16_000.5))
    with pytest.raises(AudioError, match="sample rate"):
        question_audio((speech_like(1.0), 4_000))
    with pytest.raises(AudioError, match="not found"):
        question_audio(tmp_path / "nope.wav")


# ---- runs -----------------------------------------------------------------------------------------


def test_run_folder_without_checkpoints_or_params(fake_run, tmp_path):
    cfg = find_config(fake_run)
    assert cfg.paths.run == fake_run and cfg.profile == "smoke"
    with pytest.raises(AssistantError, match=r"has no trained checkpoints .*stage2/merged.* missing"):
        check_checkpoints(cfg)
    with pytest.raises(AssistantError, match="no metrics/\\*.json"):
        find_config(tmp_path)
    with pytest.raises(AssistantError, match="neither a run folder nor a params file"):
        find_config(tmp_path / "nowhere")


def test_assistant_checks_questions_before_any_model_runs(fake_run, tmp_path):
    """No model is loaded here (all None): every refusal happens before generation."""
    assistant = Assistant(find_config(fake_run), None, None, None, None)
    video = write_video(tmp_path / "clip.mp4", clip(8))
    wav = write_wav(tmp_path / "q.wav", speech_like(1.5))
    with pytest.raises(AssistantError, match="either a spoken question"):
        assistant.ask(audio=wav, text="Is a tool visible?", frames=video, long=True)
    with pytest.raises(AssistantError, match="either a spoken question"):
        assistant.ask(audio=wav, text="Is a tool visible?", frames=video)
    with pytest.raises(AssistantError, match="needs a clip"):
        assistant.ask(audio=wav)
    with pytest.raises(AudioError, match="silent"):
        assistant.ask(audio=(np.zeros(16_000, np.float32), 16_000), frames=video)
    with pytest.raises(AssistantError, match="typed question is empty"):
        assistant.ask(text="  ", frames=video)
    frames = assistant.frame_files(video)  # decoded once to the run's frame size, stored losslessly
    assert len(frames) == 8 and Image.open(frames[0]).size == (56, 56) and assistant.frame_files(video) == frames


@pytest.mark.parametrize("case", ["no_checkpoints", "bad_video", "short_video", "empty_folder", "silence", "long_audio"])
def test_cli_bad_input_is_one_message_and_status_2(fake_run, tmp_path, capsys, case):
    wav = write_wav(tmp_path / "q.wav", speech_like(1.5))
    video = write_video(tmp_path / "clip.mp4", clip(8))
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"RIFF not really a video" * 50)
    args = {"no_checkpoints": ["--audio", str(wav), "--video", str(video)],
            "bad_video": ["--audio", str(wav), "--video", str(garbage)],
            "short_video": ["--audio", str(wav), "--video", str(write_video(tmp_path / "s.mp4", clip(4)))],
            "empty_folder": ["--audio", str(wav), "--frames", str(tmp_path)],  # holds a wav and an mp4, no images
            "silence": ["--audio", str(write_wav(tmp_path / "z.wav", np.zeros(16_000))), "--video", str(video)],
            "long_audio": ["--audio", str(write_wav(tmp_path / "l.wav", speech_like(35.0))), "--video", str(video)],
            }[case]
    expected = {"no_checkpoints": "no trained checkpoints", "bad_video": "cannot decode the video",
                "short_video": "the video has 4 frame(s)", "empty_folder": "no images", "silence": "silent",
                "long_audio": "at most 30 s"}[case]
    assert ask.main(["--run", str(fake_run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err and len(err.splitlines()) == 1


# ---- against a trained smoke run (slow) -------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(smoke_trained):
    from surgvqa import datastep

    cfg = smoke_trained
    return cfg, Assistant.from_config(cfg), datastep.load_run_data(cfg, build=False).splits["test"]


@pytest.mark.slow
def test_assistant_answers_as_the_evaluation_does(trained):
    """The graft's answer through the API == the evaluation's batched prediction for the same rows."""
    from surgvqa import evaluate
    from surgvqa.collate import vqa_examples
    from surgvqa.data import Dataset

    cfg, assistant, test = trained
    rows = [r for r in test.rows if r.get("audio")][:4]
    examples = vqa_examples(Dataset(rows, test.root, test.audio_root), "audio")
    expected = evaluate.run_model(assistant.graft, assistant.processor, examples, cfg.eval, "eval")["predictions"]
    got = [assistant.ask(audio=test.audio_path(r), frames=[str(p) for p in test.frame_paths(r)]).answer for r in rows]
    assert got == expected
    reply = assistant.ask(audio=test.audio_path(rows[0]), frames=[str(p) for p in test.frame_paths(rows[0])])
    assert reply.system == "audio_finetuned" and reply.seconds["total"] > 0
    assert reply.transcript == assistant.transcribe(test.audio_path(rows[0]))[0]  # the graft's own transcript
    asr = assistant.ask_asr(test.audio_path(rows[0]), [str(p) for p in test.frame_paths(rows[0])])
    assert asr.system == "asr_pipeline" and asr.seconds["total"] >= asr.seconds["transcript"] > 0


@pytest.mark.slow
def test_array_audio_and_video_file_give_the_same_answer_as_files(trained, tmp_path):
    import soundfile as sf

    cfg, assistant, test = trained
    row = next(r for r in test.rows if r.get("audio"))
    frames = [str(p) for p in test.frame_paths(row)]
    video = write_video(tmp_path / "clip.mkv", test.load_frames(row), lossless=True)
    data, rate = sf.read(str(test.audio_path(row)), dtype="float32")
    by_files = assistant.ask(audio=test.audio_path(row), frames=frames)
    assert assistant.ask(audio=(data, rate), frames=video).answer == by_files.answer
    assert assistant.transcribe((data, rate))[0] == by_files.transcript


@pytest.mark.slow
def test_cli_on_a_wav_and_an_mp4_prints_the_apis_answer(trained, tmp_path, capsys):
    cfg, assistant, test = trained
    row = next(r for r in test.rows if r.get("audio"))
    video = write_video(tmp_path / "clip.mp4", test.load_frames(row))
    wav = test.audio_path(row)
    proc = subprocess.run([sys.executable, "-m", "surgvqa.ask", "--run", str(cfg.paths.run), "--audio", str(wav),
                           "--video", str(video), "--compare", "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    expected = assistant.ask(audio=wav, frames=video)
    assert out["audio_finetuned"]["answer"] == expected.answer
    assert out["audio_finetuned"]["transcript"] == expected.transcript
    assert out["asr_pipeline"]["answer"] == assistant.ask_asr(wav, video).answer
    assert out["audio_finetuned"]["seconds"]["total"] > 0
    # the plain (not --json) output: the same main in this process (the module entry point ran above)
    capsys.readouterr()
    assert ask.main(["--run", str(cfg.paths.run), "--audio", str(wav), "--video", str(video)]) == 0
    plain = capsys.readouterr().out
    assert f"answer:     {expected.answer}" in plain and "latency:" in plain


@pytest.mark.slow
def test_demo_examples_cover_every_condition(trained):
    from surgvqa import demo

    cfg, assistant, test = trained
    examples = demo.example_questions(cfg, test, per_condition=1)
    assert [e["condition"] for e in examples] == list(demo.CONDITIONS)
    assert len({e["row"]["question_type"] for e in examples}) == len(examples)
    assert "noisy_snr" in examples[-1]["audio"] and examples[-1]["audio"] != str(test.audio_path(examples[-1]["row"]))
    table = demo.ask_examples(assistant, test, examples)
    assert table["graft_answer"].tolist() == [
        assistant.ask(audio=e["audio"], frames=[str(p) for p in test.frame_paths(e["row"])]).answer for e in examples]
    html = demo.examples_html(test, table)
    assert html.count("<audio") == len(examples) and "ASR transcript" in html


@pytest.mark.slow
def test_app_answers_and_shows_messages_without_a_browser(trained, tmp_path):
    """The app's handlers in-process: a take is answered as the API answers it; silence, a broken or short
    video and an empty typed question are a message in the page (never a traceback)."""
    import datetime
    import io

    import soundfile as sf

    from surgvqa import demo

    cfg, assistant, test = trained
    ui = demo.app(assistant, test)
    parts = ui.parts
    frames = demo.clip_choices(test)[parts["picker"].value]

    def take(samples, rate=16_000):
        buf = io.BytesIO()
        sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
        parts["recorder"].wav = buf.getvalue()
        parts["recorder"].takes += 1
        return parts["result"].value

    def upload(name, content):
        return ({"name": name, "type": "", "size": len(content), "content": memoryview(content),
                 "last_modified": datetime.datetime.now(datetime.timezone.utc)},)

    row = next(r for r in test.rows if r.get("audio"))
    samples, rate = sf.read(str(test.audio_path(row)), dtype="float32")
    shown = take(samples, rate)
    heard = tmp_path / "heard.wav"
    sf.write(heard, samples, rate, subtype="PCM_16")
    expected = assistant.ask(audio=heard, frames=frames)
    assert "surgvqa-error" not in shown and f"<b>{expected.answer}</b>" in shown and "surgvqa-asr" in shown
    assert "silent" in take(np.zeros(16_000, np.float32)) and "surgvqa-error" in parts["result"].value
    parts["video_upload"].value = upload("broken.mp4", b"junk" * 100)
    assert "cannot decode the video" in parts["result"].value
    parts["video_upload"].value = upload("short.mp4", write_video(tmp_path / "short.mp4", clip(4)).read_bytes())
    assert "the video has 4 frame(s)" in parts["result"].value
    parts["typed"].value = " "
    parts["ask_typed"].click()
    assert "typed question is empty" in parts["result"].value
    parts["typed"].value = row["question"]
    parts["ask_typed"].click()
    assert "surgvqa-text" in parts["result"].value and "Traceback" not in parts["result"].value
