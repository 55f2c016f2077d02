"""The systems the evaluation compares and the splits it reports on, named once for every module and report."""
from __future__ import annotations

SYSTEMS = ("majority", "text_zeroshot", "text_finetuned", "audio_zeroshot", "audio_finetuned", "asr_pipeline",
           "audio_upstream")
LABELS = {
    "majority": "majority answer per type",
    "text_zeroshot": "text + video: base VLM",
    "text_finetuned": "text + video: LoRA fine-tuned",
    "audio_zeroshot": "audio + video: graft, stage 1 only",
    "audio_finetuned": "audio + video: graft, stage 2",
    "asr_pipeline": "ASR (faster-whisper) -> text model",
    "audio_upstream": "audio + video: upstream-style graft (1500 tokens)",
}
TEST_SPLITS = ("heldout_video", "heldout_voice")  # the test rows, each question by a training and a held-out voice
EVAL_SPLITS = ("val", *TEST_SPLITS)
NOISY = "heldout_voice_noisy"  # held-out voices with operating-room noise (audio systems and ASR only)
# Column titles of the reports, in reading order.
SPLIT_TITLES = {"overall": "Accuracy overall", "val": "Val", "heldout_video": "Held-out video",
                "heldout_voice": "Held-out voice", NOISY: "Held-out voice + OR noise"}
