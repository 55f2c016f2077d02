"""Ask the trained graft one spoken question about a clip, from the command line.

    python -m surgvqa.ask --run runs/default --audio q.wav --video clip.mp4 [--at 3.5] [--compare] [--json]
    python -m surgvqa.ask --run runs/default --audio q.wav --frames path/to/frames/
    python -m surgvqa.ask --run params/default.yaml --text "Is a tool visible?" --video clip.mp4

Prints the answer, the graft's transcript of the question and the latency (`--compare`: the ASR
pipeline's too). A question or run it cannot take exits with status 2 and a one-line message.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from .assistant import USER_ERRORS
from .config import shown_path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m surgvqa.ask", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/default", help="a run folder (runs/<profile>) or its params file")
    question = parser.add_mutually_exclusive_group(required=True)
    question.add_argument("--audio", help="the spoken question (wav/flac, any rate, at most 30 s)")
    question.add_argument("--text", help="a typed question (answered by the text model)")
    clip = parser.add_mutually_exclusive_group(required=True)
    clip.add_argument("--video", help="a video file (mp4, avi, mov ...): 8 frames sampled evenly (or around --at)")
    clip.add_argument("--frames", nargs="+", help="a folder of frame images, or the image files in order")
    parser.add_argument("--at", type=float, help="sample the frames around this time of the video (seconds)")
    parser.add_argument("--long", action="store_true", help="ask for a sentence (answered as one by runs trained with train.long_answer_fraction > 0)")
    parser.add_argument("--compare", action="store_true", help="also run the ASR pipeline (faster-whisper -> text model)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    frames = args.video or (args.frames[0] if len(args.frames) == 1 else args.frames)
    try:
        from .assistant import Assistant, check_checkpoints, find_config, question_audio
        from .video import read_clip

        # Inputs and run are checked before the models load (seconds), so a bad file fails fast.
        cfg = find_config(args.run)
        if args.audio is not None:
            question_audio(args.audio)
        read_clip(frames, cfg.data.num_frames, at=args.at, size=cfg.data.frame_size)
        check_checkpoints(cfg)
        t0 = time.perf_counter()
        assistant = Assistant.from_config(cfg, asr=args.compare)
        load_s = time.perf_counter() - t0
        if args.text is not None:
            replies = {"text_finetuned": assistant.ask(text=args.text, frames=frames, at=args.at, long=args.long)}
        elif args.compare:
            replies = assistant.compare(args.audio, frames, at=args.at, long=args.long)
        else:
            replies = {"audio_finetuned": assistant.ask(audio=args.audio, frames=frames, at=args.at, long=args.long)}
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"run": shown_path(cfg.paths.run), "load_seconds": round(load_s, 3),
                          **{k: r.to_dict() for k, r in replies.items()}}, indent=2))
        return 0
    for reply in replies.values():
        heard = "heard" if reply.system != "text_finetuned" else "read"
        print(f"[{reply.system}]")
        print(f"  answer:     {reply.answer}")
        print(f"  transcript: {reply.transcript}   ({heard})")
        print("  latency:    " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in reply.seconds.items()))
    print(f"(models loaded in {load_s:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
