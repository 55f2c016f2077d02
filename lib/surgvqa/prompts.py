"""The one prompt builder for every stage (the seeds used ChatML in stage 2 only).

Audio mode: the user turn holds the video clip and the spoken question; the question TEXT is
never in the prompt (the seeds put it there too, so their audio added nothing).
"""
from __future__ import annotations

from typing import Literal

import torch
from qwen2_vl_audio.processing_qwen2_vl_audio import IM_END, IM_START

Mode = Literal["audio", "text"]

VQA_INSTRUCTION = "Answer the question about the endoscopy clip in a few words."
LONG_INSTRUCTION = "Answer the question about the endoscopy clip in a full sentence."  # the long-form `answer`
TRANSCRIBE_INSTRUCTION = "Transcribe the speech."
CAPTION_INSTRUCTION = "Describe the clip."


class PromptLeakError(AssertionError):
    """The question text found its way into an audio-mode prompt."""


def vqa_messages(mode: Mode, question: str | None = None, video: bool = True, answer: str | None = None,
                 long: bool = False) -> list[dict]:
    """Chat messages for video QA. mode="audio": the question is heard, so `question` must be None.
    `long`: the instruction asks for a sentence (the long-form answer) instead of a few words."""
    if mode == "audio" and question is not None:
        raise PromptLeakError("audio mode: the question is spoken; its text must not be passed to the prompt")
    if mode == "text" and not question:
        raise ValueError("text mode needs the question text")
    content = [{"type": "video"}] if video else []
    content.append({"type": "audio"} if mode == "audio" else {"type": "text", "text": f"Question: {question}"})
    content.append({"type": "text", "text": LONG_INSTRUCTION if long else VQA_INSTRUCTION})
    return _with_answer([{"role": "user", "content": content}], answer)


def caption_messages(answer: str | None = None, video: bool = True) -> list[dict]:
    """Chat messages for clip -> dense caption (stage 0, after a conversation's questions)."""
    content = ([{"type": "video"}] if video else []) + [{"type": "text", "text": CAPTION_INSTRUCTION}]
    return _with_answer([{"role": "user", "content": content}], answer)


def transcribe_messages(answer: str | None = None) -> list[dict]:
    """Chat messages for speech -> transcript (stage 1 and the ASR evaluation)."""
    content = [{"type": "audio"}, {"type": "text", "text": TRANSCRIBE_INSTRUCTION}]
    return _with_answer([{"role": "user", "content": content}], answer)


def _with_answer(messages: list[dict], answer: str | None) -> list[dict]:
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def render(processor, messages: list[dict]) -> str:
    """Prompt text: with a generation prompt when the last turn is the user's."""
    open_turn = messages[-1]["role"] != "assistant"
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=open_turn)


def assert_no_question_text(prompt: str, question: str) -> None:
    if question.strip() and question.strip().lower() in prompt.lower():
        raise PromptLeakError(f"question text leaked into an audio-mode prompt: {question!r}")


def assistant_labels(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Labels that train only on the assistant's answers (+ their closing <|im_end|>), every
    assistant turn of a conversation; -100 elsewhere.

    Works on right-padded batches: padding, system and user turns, and all audio/vision
    placeholders get -100.
    """
    im_start = tokenizer.convert_tokens_to_ids(IM_START)
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    header = tokenizer("assistant\n", add_special_tokens=False)["input_ids"]
    labels = torch.full_like(input_ids, -100)
    for row, ids in enumerate(input_ids.tolist()):
        starts = [i for i, t in enumerate(ids) if t == im_start and ids[i + 1 : i + 1 + len(header)] == header]
        if not starts:
            raise ValueError(f"row {row}: no assistant turn to train on")
        for start in starts:
            begin = start + 1 + len(header)
            end = ids.index(im_end, begin) if im_end in ids[begin:] else len(ids)
            labels[row, begin : end + 1] = input_ids[row, begin : end + 1]
    return labels
