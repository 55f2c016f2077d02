"""The systems the evaluation compares and the splits it reports on, named once for every module and report."""
from __future__ import annotations

SYSTEMS = ("majority", "text_zeroshot", "text_finetuned", "audio_zeroshot", "audio_finetuned", "asr_pipeline",
           "asr_prompted", "audio_upstream")
LABELS = {
    "majority": "majority answer per type",
    "text_zeroshot": "text + video: base VLM",
    "text_finetuned": "text + video: LoRA fine-tuned",
    "audio_zeroshot": "audio + video: graft, stage 1 only",
    "audio_finetuned": "audio + video: graft, stage 2",
    "asr_pipeline": "ASR (faster-whisper) -> text model",
    "asr_prompted": "ASR (faster-whisper, domain prompt) -> text model",
    "audio_upstream": "audio + video: upstream-style graft (1500 tokens)",
}
# the dev-test rows, each question by a training voice, a held-out voice of the training engines and a voice of the
# held-out engine (the engine family no training pool hears), and by the held-out voice in a held-out wording
VOICE_SPLITS = ("heldout_video", "heldout_voice", "heldout_engine")  # as worded in training, by three kinds of voice
TEST_SPLITS = (*VOICE_SPLITS, "heldout_wording")
DEV_SPLITS = ("val", *TEST_SPLITS)  # what recipes are chosen on ("overall" = these rows)
# val rows re-asked in val wordings: what a recipe for new wordings is chosen on (ablations; notebook 04 skips them)
VAL_WORDING = "val_wording"
FINAL_TEST = "final_test"  # unseen videos and voices, scored only by the reference run (`eval.score_final_test`)
EVAL_SPLITS = (*DEV_SPLITS, FINAL_TEST)
NOISY = "heldout_voice_noisy"  # held-out voices with operating-room noise (audio systems and ASR only)
NOISY_ENGINE = "heldout_engine_noisy"  # the held-out engine with the same noise
NOISY_OF = {"heldout_voice": NOISY, "heldout_engine": NOISY_ENGINE}  # a spoken split -> its noisy condition
# Column titles of the reports, in reading order.
SPLIT_TITLES = {"overall": "Accuracy overall (dev)", "val": "Val", "heldout_video": "Held-out video",
                "heldout_voice": "Held-out voice", NOISY: "Held-out voice + OR noise",
                "heldout_engine": "Held-out engine", NOISY_ENGINE: "Held-out engine + OR noise",
                "heldout_wording": "Held-out wording", VAL_WORDING: "Val wording",
                FINAL_TEST: "Final test (unseen video + voice)"}
