"""Notebook 06 as an app: choose a clip, ask by microphone, by an uploaded file or by typing, and see the graft's
answer and transcript next to the ASR pipeline's, with latencies. Headless, it asks a fixed list of examples.

    python -m surgvqa.demo --params params/default.yaml [--port 8866]    # `make demo`: voila on 127.0.0.1

The microphone widget (`MicRecorder`) is a small anywidget: the browser records PCM with the Web Audio API and
sends a 16-bit WAV to the kernel, which asks the assistant; the page shows exactly those bytes as "heard".
"""
from __future__ import annotations

import argparse
import base64
import html
import logging
import socket
import os
import sys
import tempfile
from pathlib import Path

import anywidget
import numpy as np
import pandas as pd
import traitlets

from . import answers, error_analysis, media, speech
from .assistant import USER_ERRORS, Assistant, Reply
from .config import REPO_ROOT, Config, shown_path
from .data import Dataset

log = logging.getLogger(__name__)
NOTEBOOK = REPO_ROOT / "notebooks" / "06_demo.ipynb"

# ---- the fixed examples of the report ---------------------------------------------------------------------

CONDITIONS = ("heldout_video", "heldout_voice", "heldout_voice + OR noise")


def example_questions(cfg: Config, test: Dataset, per_condition: int = 2) -> list[dict]:
    """A fixed, seeded list of test questions: held-out video, held-out voices, and held-out voices with
    operating-room noise (the evaluation's SNR, `speech.noisy_copy`), each of a different question type."""
    rng = np.random.default_rng(cfg.seed)
    out, used_types = [], set()
    for condition in CONDITIONS if per_condition > 0 else ():
        group = condition.split(" ")[0]
        rows = [r for r in test.rows if r.get("group") == group and r.get("audio")]
        picked = 0
        for i in rng.permutation(len(rows)):
            row = rows[i]
            if row["question_type"] in used_types:
                continue
            audio = test.audio_path(row)
            if "noise" in condition:
                snr = cfg.eval.noise_snr_db
                audio = speech.noisy_copy(audio, cfg.paths.noisy(snr), snr, cfg.seed)
            out.append({"condition": condition, "row": row, "audio": str(audio)})
            used_types.add(row["question_type"])
            picked += 1
            if picked == per_condition:
                break
    return out


def ask_examples(assistant: Assistant, test: Dataset, examples: list[dict]) -> pd.DataFrame:
    """Each example asked of the graft and of the ASR pipeline: transcripts, answers, latencies, correctness."""
    records = []
    for ex in examples:
        row = ex["row"]
        frames = [str(p) for p in test.frame_paths(row)]
        replies = assistant.compare(ex["audio"], frames)
        rec = {"condition": ex["condition"], "id": row["id"], "video_id": row["video_id"], "template": row.get("template"),
               "question_type": row["question_type"], "voice": row.get("voice"), "question": row["question"],
               "short_answer": row["short_answer"], "audio": ex["audio"]}
        for prefix, reply in (("graft", replies["audio_finetuned"]), ("asr", replies.get("asr_pipeline"))):
            if reply is None:
                continue
            rec[f"{prefix}_transcript"] = reply.transcript
            rec[f"{prefix}_answer"] = reply.answer
            rec[f"{prefix}_ms"] = round(reply.seconds["total"] * 1000, 1)
            rec[f"{prefix}_correct"] = answers.exact_match(reply.answer, row["short_answer"], row["question_type"])
        records.append(rec)
    return pd.DataFrame(records)


def examples_html(test: Dataset, table: pd.DataFrame) -> str:
    """One card per example (flipbook, the audio the models heard, truth vs the graft's answer), with the
    graft's transcript and the ASR pipeline's transcript and answer beside it."""
    cards = []
    for rec in table.to_dict("records"):
        extra = {"condition": rec["condition"], "graft heard": rec["graft_transcript"], "graft latency": f"{rec['graft_ms']:.0f} ms"}
        if "asr_answer" in rec:
            extra.update({"ASR transcript": rec["asr_transcript"],
                          "ASR pipeline answer": f"{rec['asr_answer']} {'✓' if rec['asr_correct'] else '✗'}",
                          "ASR latency": f"{rec['asr_ms']:.0f} ms"})
        cards.append(error_analysis.case_html(test, rec, rec["graft_answer"], extra=extra, audio_path=rec["audio"]))
    return "<div>" + "".join(cards) + "</div>"


def example_metrics(table: pd.DataFrame) -> dict:
    out = {"examples": len(table), "conditions": table["condition"].value_counts().to_dict()}
    for prefix in ("graft", "asr"):
        if f"{prefix}_ms" in table:
            out[f"{prefix}_latency_ms_p50"] = float(np.percentile(table[f"{prefix}_ms"], 50))
            out[f"{prefix}_correct"] = int(table[f"{prefix}_correct"].sum())
    return out


# ---- the app ----------------------------------------------------------------------------------------------

_RECORDER_ESM = r"""
function encodeWav(chunks, rate) {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const buf = new ArrayBuffer(44 + 2 * n), v = new DataView(buf);
  const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); v.setUint32(4, 36 + 2 * n, true); str(8, "WAVE"); str(12, "fmt ");
  v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, rate, true);
  v.setUint32(28, 2 * rate, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true); str(36, "data");
  v.setUint32(40, 2 * n, true);
  let o = 44;
  for (const c of chunks) for (let i = 0; i < c.length; i++, o += 2) {
    const s = Math.max(-1, Math.min(1, c[i]));
    v.setInt16(o, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return { buf, seconds: n / rate };
}
function render({ model, el }) {
  const btn = document.createElement("button");
  btn.className = "surgvqa-record jupyter-widgets jupyter-button widget-button";
  btn.textContent = "● Record";
  const status = document.createElement("span");
  status.className = "surgvqa-record-status";
  status.style.marginLeft = "8px";
  let ctx = null, source, proc, stream, chunks = [];
  btn.onclick = async () => {
    if (ctx === null) {
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      } catch (e) {
        status.textContent = "microphone unavailable: " + e.message;
        return;
      }
      ctx = new AudioContext();
      source = ctx.createMediaStreamSource(stream);
      proc = ctx.createScriptProcessor(4096, 1, 1);
      chunks = [];
      proc.onaudioprocess = (ev) => chunks.push(new Float32Array(ev.inputBuffer.getChannelData(0)));
      source.connect(proc);
      proc.connect(ctx.destination);
      btn.textContent = "■ Stop and ask";
      status.textContent = "recording…";
    } else {
      source.disconnect(); proc.disconnect();
      stream.getTracks().forEach((t) => t.stop());
      const rate = ctx.sampleRate;
      await ctx.close();
      ctx = null;
      const { buf, seconds } = encodeWav(chunks, rate);
      btn.textContent = "● Record";
      status.textContent = seconds.toFixed(1) + " s recorded";
      model.set("wav", new DataView(buf));
      model.set("takes", model.get("takes") + 1);
      model.save_changes();
    }
  };
  el.append(btn, status);
}
export default { render };
"""


class MicRecorder(anywidget.AnyWidget):
    """Record from the browser's microphone: `wav` holds the last take as 16-bit PCM WAV bytes."""

    _esm = _RECORDER_ESM
    wav = traitlets.Bytes(b"").tag(sync=True, from_json=lambda v, _: bytes(v) if v is not None else b"",
                                   to_json=lambda v, _: memoryview(v))
    takes = traitlets.Int(0).tag(sync=True)


def clip_choices(test: Dataset) -> dict[str, list[str]]:
    """The test clips by label ("<video> frames a-b"), each with its frame paths, in a fixed order."""
    out = {}
    for row in sorted(test.rows, key=lambda r: (r["video_id"], r["frame_numbers"][0])):
        label = f"{row['video_id']} frames {row['frame_numbers'][0]}-{row['frame_numbers'][-1]}"
        out.setdefault(label, [str(p) for p in test.frame_paths(row)])
    return out


def _wav_player(data: bytes) -> str:
    b64 = base64.b64encode(data).decode()
    return (f'<audio class="surgvqa-heard" controls src="data:audio/wav;base64,{b64}" style="width:100%"></audio>')


def reply_html(replies: dict[str, Reply], heard: bytes | None = None) -> str:
    """The answers side by side: system, how it understood the question, its answer, latency."""
    rows = []
    labels = {"audio_finetuned": "graft (hears the question)", "asr_pipeline": "ASR pipeline (faster-whisper → text model)",
              "text_finetuned": "text model (reads the typed question)"}
    for system, r in replies.items():
        cls = {"audio_finetuned": "graft", "asr_pipeline": "asr", "text_finetuned": "text"}[system]
        rows.append(f'<tr class="surgvqa-{cls}"><td>{html.escape(labels[system])}</td>'
                    f'<td class="transcript">{html.escape(r.transcript or "")}</td>'
                    f'<td class="answer"><b>{html.escape(r.answer)}</b></td>'
                    f'<td>{r.seconds["total"] * 1000:.0f} ms</td></tr>')
    player = f"<div>heard: {_wav_player(heard)}</div>" if heard else ""
    return (f'<div class="surgvqa-result">{player}<table style="border-collapse:collapse;font-size:14px" cellpadding="6">'
            "<tr><th>system</th><th>question understood as</th><th>answer</th><th>latency</th></tr>"
            + "".join(rows) + "</table></div>")


def error_html(message: str) -> str:
    return f'<div class="surgvqa-error" style="color:#cf222e;font-weight:bold">⚠ {html.escape(message)}</div>'


def _gif(frames: np.ndarray) -> bytes:
    return media.flipbook_gif(frames, size=224)


def load(cfg: Config, serve: bool = False) -> tuple[Assistant | None, Dataset | None]:
    """The assistant and the test clips. Served as an app, a run it cannot load (no checkpoints, say)
    becomes a message in the page and (None, None); in a report it is an error."""
    from IPython.display import HTML, display

    from . import datastep

    try:
        assistant = Assistant.from_config(cfg)
        test = datastep.load_run_data(cfg, build=False).splits["test"]
    except USER_ERRORS as e:
        if not serve:
            raise
        display(HTML(error_html(str(e))))
        return None, None
    print(f"models of {shown_path(cfg.paths.run)} loaded; {len(clip_choices(test))} test clips to choose from")
    return assistant, test


def app(assistant: Assistant, test: Dataset):
    """The interactive demo: clip picker (flipbook, or an uploaded video), microphone, audio upload, typed question."""
    import ipywidgets as W

    from .video import read_clip

    tmp = Path(tempfile.mkdtemp(prefix="surgvqa-demo-"))
    choices = clip_choices(test)
    state = {"frames": next(iter(choices.values())) if choices else None}
    picker = W.Dropdown(options=list(choices), description="clip", layout=W.Layout(width="420px"))
    video_upload = W.FileUpload(accept=".mp4,.avi,.mov,.mkv,.webm", multiple=False, description="Upload a video")
    flipbook = W.Image(format="gif", width=224, height=224)
    clip_note = W.HTML()
    recorder = MicRecorder()
    audio_upload = W.FileUpload(accept=".wav,.flac,.ogg", multiple=False, description="Upload audio")
    typed = W.Text(placeholder="or type a question, e.g. Is a tool visible?", layout=W.Layout(width="420px"))
    ask_typed = W.Button(description="Ask", button_style="primary")
    result = W.HTML()
    result.add_class("surgvqa-output")
    busy = W.HTML()

    def show_clip(frames_source) -> None:
        frames = read_clip(frames_source, assistant.cfg.data.num_frames, size=assistant.cfg.data.frame_size)
        flipbook.value = _gif(frames)
        state["frames"] = frames_source

    def guarded(fn):
        def run(*args):
            busy.value = "<i>thinking…</i>"
            try:
                fn(*args)
            except USER_ERRORS as e:
                result.value = error_html(str(e))
            except Exception as e:  # the page shows a message; the traceback goes to the server's log
                log.exception("demo: unexpected error")
                result.value = error_html(f"unexpected error ({type(e).__name__}): {e}")
            finally:
                busy.value = ""
        return run

    @guarded
    def on_pick(_=None):
        show_clip(choices[picker.value])
        clip_note.value = f"<small>{html.escape(picker.value)} (test split)</small>"

    @guarded
    def on_video(change):
        if not video_upload.value:
            return
        f = video_upload.value[0]
        path = tmp / Path(f["name"]).name
        path.write_bytes(bytes(f["content"]))
        show_clip(path)
        clip_note.value = f"<small>uploaded: {html.escape(path.name)}</small>"

    def answer_audio(data: bytes, suffix: str) -> None:
        path = tmp / f"question_{len(list(tmp.glob('question_*')))}{suffix}"
        path.write_bytes(data)
        replies = assistant.compare(str(path), state["frames"])
        result.value = reply_html(replies, data if suffix == ".wav" else None)

    @guarded
    def on_take(change):
        answer_audio(bytes(recorder.wav), ".wav")

    @guarded
    def on_audio_upload(change):
        if audio_upload.value:
            f = audio_upload.value[0]
            answer_audio(bytes(f["content"]), Path(f["name"]).suffix.lower())

    @guarded
    def on_typed(_=None):
        reply = assistant.ask(text=typed.value, frames=state["frames"])
        result.value = reply_html({"text_finetuned": reply})

    picker.observe(on_pick, names="value")
    video_upload.observe(on_video, names="value")
    recorder.observe(on_take, names="takes")
    audio_upload.observe(on_audio_upload, names="value")
    ask_typed.on_click(on_typed)
    on_pick()
    ui = W.VBox([
        W.HTML("<h3>1 · Choose a clip</h3>"), W.HBox([picker, video_upload]), flipbook, clip_note,
        W.HTML("<h3>2 · Ask</h3>"),
        W.HBox([W.HTML("<b>microphone:</b>&nbsp;"), recorder]),
        W.HBox([W.HTML("<b>or a file:</b>&nbsp;"), audio_upload]),
        W.HBox([typed, ask_typed]),
        busy, W.HTML("<h3>3 · Answers</h3>"), result,
    ])
    ui.parts = {"picker": picker, "video_upload": video_upload, "recorder": recorder, "audio_upload": audio_upload,
                "typed": typed, "ask_typed": ask_typed, "result": result, "flipbook": flipbook}  # for tests
    return ui


# ---- serving ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_app_notebook(params_file: str, overrides: dict | None, out_dir: Path) -> Path:
    """Notebook 06 with its parameters filled in for the app (no fixed examples: the page opens fast)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    out_dir.mkdir(parents=True, exist_ok=True)
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)),
                               {"params_file": params_file, "overrides": overrides or {}, "examples_per_condition": 0,
                                "serve": True})
    path = out_dir / NOTEBOOK.name
    nbformat.write(nb, path)
    return path


def voila_command(notebook: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
            "--show_tracebacks=False", "--theme=light", f"--Voila.root_dir={notebook.parent}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params/default.yaml")
    parser.add_argument("--run-root", help="the run's root folder if not the params' run_root")
    parser.add_argument("--port", type=int, default=8866)
    args = parser.parse_args(argv)
    overrides = {"run_root": args.run_root} if args.run_root else None
    cfg = Config.from_yaml(args.params, overrides)
    # The app's copy of the notebook goes to a temp folder: the run folder may be read-only.
    notebook = write_app_notebook(shown_path(args.params), overrides, Path(tempfile.mkdtemp(prefix="surgvqa-demo-")))
    print(f"[demo] {shown_path(cfg.paths.run)} on http://127.0.0.1:{args.port}/ (Ctrl-C stops it)", flush=True)
    command = voila_command(notebook, args.port)
    os.execv(command[0], command)  # voila itself: Ctrl-C or a signal stops the server and its kernels


if __name__ == "__main__":
    main(sys.argv[1:])
