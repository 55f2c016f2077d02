"""Collator, feature cache, stage freezing, LoRA placement and resume-after-interrupt (smoke sizes)."""
import dataclasses

import pytest
import torch

from surgvqa import checkpoints, lora, models, stages, synthetic, trainer, training_report
from surgvqa import prompts
from surgvqa.audio import write_wav
from surgvqa.collate import Collator, Example
from surgvqa.config import REPO_ROOT, STAGE_INPUTS, Config, ConfigError, TrainConfig
from surgvqa.caches import FeatureCache, encoder_fingerprint
from surgvqa.speech import voices, synthesize

pytestmark = pytest.mark.slow  # builds grafts and trains (minutes)

SMOKE = REPO_ROOT / "params" / "smoke.yaml"


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, whisper_cache_dir, smoke_audio):
    """The smoke config with every run path inside a temp dir (its data step starts with the session's audio)."""
    cfg = Config.from_yaml(SMOKE, {"run_root": str(tmp_path_factory.mktemp("runs")),
                                   "model": {"whisper_cache_dir": str(whisper_cache_dir)}})
    smoke_audio(cfg.paths.data)
    return cfg


@pytest.fixture(scope="module")
def run_data(cfg):
    """The smoke data step, built once for this module's run dir."""
    from surgvqa.datastep import load_run_data

    return load_run_data(cfg)


@pytest.fixture
def stamped(cfg, run_data):
    """The smoke config once its data step exists (a stage's stamp covers the data step's own)."""
    return cfg


@pytest.fixture(scope="module")
def graft_and_processor(cfg):
    torch.manual_seed(0)
    return models.build_graft(cfg)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Three spoken questions of different lengths, as wav files."""
    out = tmp_path_factory.mktemp("speech")
    texts = ["is a tool visible", "what is the size of the lesion in millimetres", "is the light narrow band imaging"]
    paths = []
    for i, (text, voice) in enumerate(zip(texts, voices(3))):
        path = out / f"q{i}.wav"
        write_wav(path, synthesize(text, voice))
        paths.append(path)
    return texts, paths


@pytest.fixture(scope="module")
def frames(tmp_path_factory, cfg):
    from PIL import Image

    out = tmp_path_factory.mktemp("frames")
    paths = []
    for i, frame in enumerate(synthetic.sample_clip(cfg.seed, cfg.data.num_frames, cfg.data.frame_size)):
        Image.fromarray(frame).save(out / f"f{i}.png")
        paths.append(str(out / f"f{i}.png"))
    return tuple(paths)


def vqa(speech, frames, mode):
    texts, paths = speech
    answers = ["no", "5-10", "yes"]
    return [Example("vqa", a, mode=mode, question=q, audio=str(p), frames=frames, meta={"id": str(i), "question_type": "x"})
            for i, (q, p, a) in enumerate(zip(texts, paths, answers))]


# ---- collator -----------------------------------------------------------------------------------------


def test_labels_cover_only_the_answer_and_audio_prompt_has_no_question(graft_and_processor, speech, frames):
    _, processor = graft_and_processor
    examples = vqa(speech, frames, "audio")
    batch = Collator(processor)(examples)
    tok = processor.tokenizer
    lengths = batch["attention_mask"].sum(-1)
    assert len(set(lengths.tolist())) > 1, "mixed audio lengths should give different prompt lengths"
    for row, ex in enumerate(examples):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        supervised = labels != -100
        assert tok.decode(ids[supervised]) == ex.answer + prompts.IM_END
        assert not supervised[lengths[row]:].any(), "padding must never carry loss (right padding)"
        text = tok.decode(ids[: lengths[row]])
        assert ex.question not in text
        assert (ids == processor.tokenizer.convert_tokens_to_ids("<|audio_pad|>")).sum() == processor.audio_token_count(
            len(__import__("surgvqa.audio", fromlist=["load_audio"]).load_audio(ex.audio)))
    # the 8 frames enter as ONE clip each: temporal grid 4
    assert batch["video_grid_thw"].shape[0] == len(examples) and batch["video_grid_thw"][:, 0].tolist() == [4, 4, 4]


def test_text_mode_reads_the_question_and_generation_mode_left_pads(graft_and_processor, speech, frames):
    _, processor = graft_and_processor
    examples = vqa(speech, frames, "text")
    train_batch = Collator(processor)(examples)
    assert "input_features" not in train_batch and "mm_encoder_outputs" not in train_batch
    assert examples[1].question in processor.tokenizer.decode(train_batch["input_ids"][1])
    gen = Collator(processor, training=False)(examples)
    assert "labels" not in gen
    assert (gen["attention_mask"][:, -1] == 1).all(), "generation batches are left-padded"
    assert not any(processor.tokenizer.decode(ids).count(ex.answer + prompts.IM_END) for ids, ex in zip(gen["input_ids"], examples))


def test_audio_question_text_in_the_prompt_is_refused(graft_and_processor, speech, frames):
    _, processor = graft_and_processor
    leaky = vqa(speech, frames, "audio")[0]
    collator = Collator(processor)
    collator.messages = lambda ex: prompts.vqa_messages("text", question=ex.question, answer=ex.answer)  # a buggy prompt builder
    with pytest.raises(prompts.PromptLeakError):
        collator([leaky])


# ---- feature cache -------------------------------------------------------------------------------------


def test_feature_cache_hits_misses_and_invalidation(cfg, graft_and_processor, speech, tmp_path):
    import shutil

    model, processor = graft_and_processor
    cache = FeatureCache(tmp_path, model, processor)
    _, paths = speech
    first, n = cache.get(paths[0])
    again, _ = cache.get(paths[0])
    assert (cache.hits, cache.misses) == (1, 1) and torch.equal(first[0], again[0])
    # same content at another path: still a hit (keyed by content, not name)
    copy = tmp_path / "copy.wav"
    shutil.copy(paths[0], copy)
    cache.get(copy)
    assert cache.hits == 2
    # changed content: a miss
    from surgvqa.audio import load_audio

    write_wav(copy, load_audio(paths[0]) * 0.5)
    cache.get(copy)
    assert cache.misses == 2
    # other encoder weights or other length mode: another cache directory
    other = models.build_graft(cfg)[0]
    with torch.no_grad():
        other.model.audio_tower.layer_norm.weight.add_(0.01)
    assert encoder_fingerprint(other.model.audio_tower) != cache.encoder_id
    assert FeatureCache(tmp_path, other, processor).dir != cache.dir
    other.config.audio_length_mode = "padded"
    padded = FeatureCache(tmp_path, model.__class__(other.config), processor)
    assert padded.dir.name.endswith("-padded") and padded.dir != cache.dir


def test_cached_features_give_the_same_logits(cfg, graft_and_processor, speech, frames, tmp_path):
    model, processor = graft_and_processor
    model.eval()
    examples = vqa(speech, frames, "audio")
    cached = Collator(processor, feature_cache=FeatureCache(tmp_path, model, processor))(examples)
    direct = Collator(processor)(examples)
    assert "mm_encoder_outputs" in cached and "input_features" in direct
    with torch.no_grad():
        a = model(**{k: v for k, v in cached.items() if k != "labels"}).logits
        b = model(**{k: v for k, v in direct.items() if k != "labels"}).logits
    assert torch.allclose(a, b, atol=1e-4)


# ---- freezing and LoRA --------------------------------------------------------------------------------


def test_stage1_trains_only_the_projector(cfg, speech, frames):
    torch.manual_seed(0)
    frozen_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, stage1_language_model="frozen"))
    model, processor = models.build_graft(frozen_cfg)
    model = stages.stage1_trainables(frozen_cfg, model)
    model.train()
    batch = Collator(processor)(vqa(speech, frames, "audio"))
    model(**batch).loss.backward()
    with_grad = {n.split(".")[1] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"audio_projector"}


def test_stage1_with_lora_trains_projector_and_language_model_and_merges_into_a_plain_graft(cfg, speech, frames):
    torch.manual_seed(0)
    lora_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, stage1_language_model="lora"))
    model, processor = models.build_graft(lora_cfg)
    prepared = stages.stage1_trainables(lora_cfg, model)
    report = training_report.lora_report(prepared)
    assert report.loc["language model", "lora_modules"] > 0 and report.loc["audio projector", "trainable"] > 0
    assert report.loc[["audio tower", "vision tower", "lm head"], "trainable"].sum() == 0
    prepared.train()
    prepared(**Collator(processor)(vqa(speech, frames, "audio"))).loss.backward()
    grads = {n for n, p in prepared.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(".lora_" in n for n in grads) and any("audio_projector" in n for n in grads)
    assert not [n for n in grads if ".audio_tower." in n or ".visual." in n]
    with torch.no_grad():  # a trained LoRA: the merged graft must carry it
        for n, p in prepared.named_parameters():
            if ".lora_B." in n:
                p.add_(0.01)
    batch = Collator(processor, training=False)(vqa(speech, frames, "audio"))
    prepared.eval()
    with torch.no_grad():
        expected = prepared(**batch).logits
        merged = prepared.merge_and_unload()
        assert not any(".lora_" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-4, rtol=1e-4)
    frozen_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, stage1_language_model="frozen"))
    frozen = stages.stage1_trainables(frozen_cfg, models.build_graft(frozen_cfg)[0])  # the upstream recipe: the projector alone
    assert {n.split(".")[1] for n, p in frozen.named_parameters() if p.requires_grad} == {"audio_projector"}


def test_every_train_option_says_which_stages_it_changes():
    """The stamps are built from each option's declared stages (`config.option`): a new option must declare them."""
    for f in dataclasses.fields(TrainConfig):
        assert "stages" in f.metadata, f"train.{f.name}: declare the stages it changes with config.option"
        assert set(f.metadata["stages"]) <= set(STAGE_INPUTS), f.name
    assert not TrainConfig.__dataclass_fields__["report_to"].metadata["stages"]  # logging changes no result


def test_a_stage_stamp_holds_its_own_options_and_those_of_the_stages_it_is_made_from(stamped):
    cfg = stamped
    changes = {"stage1_language_model": "frozen", "transcription_fraction": 0.55, "long_answer_fraction": 0.55,
               "heard_question_fraction": 0.55, "graft_read_ratio": 0.55, "stage0_caption": False,
               "questions_per_clip": 3, "question_rarity": 0.0, "eval_rows": 7, "stage0_refine": {"learning_rate": 1e-4},
               "vision_pretrain_epochs": 2,
               "stage0": {**cfg.train.stage0, "learning_rate": 0.5}, "stage1": {**cfg.train.stage1, "learning_rate": 0.5},
               "stage2": {**cfg.train.stage2, "learning_rate": 0.5}}
    assert set(changes) == {f.name for f in dataclasses.fields(TrainConfig)} - {"report_to", "early_stopping_patience"}
    for key, value in changes.items():
        changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **{key: value}))
        declared = set(TrainConfig.__dataclass_fields__[key].metadata["stages"])
        for stage, inputs in STAGE_INPUTS.items():
            moved = checkpoints.stage_stamp(changed, stage) != checkpoints.stage_stamp(cfg, stage)
            assert moved == bool(declared & {stage, *inputs}), (key, stage)
    # stage 0 is reused by its stamp: no option of a later stage may move it
    assert {k for k in changes if "stage0" in TrainConfig.__dataclass_fields__[k].metadata["stages"]} == {
        "stage0", "stage0_caption", "stage0_refine", "questions_per_clip", "question_rarity", "eval_rows",
        "vision_pretrain_epochs"}


def test_early_stopping_patience_per_stage_and_stage0_stamp_sees_only_its_own(stamped):
    cfg = stamped
    p0 = cfg.train.patience("stage0")
    per_stage = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, early_stopping_patience={"stage0": p0, "stage1": p0 + 3}))
    assert [per_stage.train.patience(s) for s in ("stage0", "stage1", "stage2")] == [p0, p0 + 3, 0]  # unnamed: never
    # stage 1's patience leaves a finished stage 0 reusable, and changes the stages after it
    assert checkpoints.stage_stamp(per_stage, "stage0") == checkpoints.stage_stamp(cfg, "stage0")
    assert checkpoints.stage_stamp(per_stage, "stage1") != checkpoints.stage_stamp(cfg, "stage1")
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, early_stopping_patience={"stage0": p0 + 1}))
    assert checkpoints.stage_stamp(other, "stage0") != checkpoints.stage_stamp(cfg, "stage0")


def test_lora_wraps_only_the_language_model_and_towers_get_no_gradient(cfg, speech, frames):
    torch.manual_seed(0)
    model, processor = models.build_graft(cfg)
    peft_model = lora.add_lora(cfg, model, with_projector=True)
    report = training_report.lora_report(peft_model)
    assert report.loc["language model", "lora_modules"] == cfg.model.tiny.num_hidden_layers * len(cfg.lora.target_modules)
    assert report.loc[["audio tower", "vision tower", "lm head"], "lora_modules"].sum() == 0
    assert report.loc[["audio tower", "vision tower"], "trainable"].sum() == 0
    peft_model.train()
    peft_model(**Collator(processor)(vqa(speech, frames, "audio"))).loss.backward()
    grads = {n: p.grad for n, p in peft_model.named_parameters() if p.grad is not None}
    assert not [n for n in grads if ".audio_tower." in n or ".visual." in n]
    assert any(".lora_B." in n and g.abs().sum() > 0 for n, g in grads.items())
    assert any("audio_projector" in n and g.abs().sum() > 0 for n, g in grads.items())


def test_only_the_main_process_writes_or_clears_tensorboard_logs(tmp_path, monkeypatch):
    log_dir = tmp_path / "logs" / "stage0"
    monkeypatch.setenv("RANK", "1")  # another DDP process: it must neither create the folder nor empty it
    assert trainer.tensorboard_callback(log_dir, fresh=True).tb_writer is None and not log_dir.exists()
    log_dir.mkdir(parents=True)
    (log_dir / "old").write_text("x")
    trainer.tensorboard_callback(log_dir, fresh=True)
    assert (log_dir / "old").exists()
    monkeypatch.setenv("RANK", "0")
    callback = trainer.tensorboard_callback(log_dir, fresh=True)  # the main process starts an empty folder
    assert not (log_dir / "old").exists() and callback.tb_writer is not None
    callback.tb_writer.close()


def test_bf16_on_a_machine_without_a_gpu_trains_on_the_cpu(cfg, tmp_path):
    args = trainer.training_arguments(cfg, "stage0", tmp_path)  # stage 0 is bf16 by default (its ablation)
    assert args.bf16 and (args.use_cpu or torch.cuda.is_available())
    assert not trainer.training_arguments(cfg, "stage1", tmp_path).bf16
    fp32 = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, stage0={**cfg.train.stage0, "bf16": False}))
    assert not trainer.training_arguments(fp32, "stage0", tmp_path).bf16


def test_bad_train_params_name_the_key():
    with pytest.raises(ConfigError, match=r"train\.stage1\.learning_rat.*learning_rate"):
        Config.from_params({"train": {"stage1": {"learning_rat": 1e-3}}})
    with pytest.raises(ConfigError, match=r"train\.stage3"):
        Config.from_params({"train": {"stage3": {}}})
    with pytest.raises(ConfigError, match=r"train\.stage2\.learning_rate.*float.*'1e-3'"):
        Config.from_params({"train": {"stage2": {"learning_rate": "1e-3"}}})


# ---- resume ----------------------------------------------------------------------------------------------


def test_interrupted_stage0_resumes_to_the_same_weights(cfg):
    """Stop after 3 steps (a checkpoint is written there), resume, and land on the same weights as an
    uninterrupted run. Stage 0 is a full-model stage: its checkpoints use hub key names on disk."""
    # batches of one conversation: the smoke data gives enough steps to stop at 3 and resume
    from surgvqa.datastep import load_run_data

    run = dataclasses.replace(cfg, train=TrainConfig(stage0={"num_train_epochs": 2, "per_device_train_batch_size": 1,
                                                             "eval_strategy": "no", "save_strategy": "no", "logging_steps": 1},
                                                     stage0_refine={}))
    data = load_run_data(run)
    final = checkpoints.stage_dir(run, "stage0") / "final" / "model.safetensors"

    stages.train_stage0(run, data, resume=False)
    from safetensors.torch import load_file

    uninterrupted = load_file(final)
    stages.train_stage0(run, data, resume=False, stop_after_steps=3)
    assert not final.exists() and (checkpoints.stage_dir(run, "stage0") / "checkpoint-3").is_dir()
    result = stages.train_stage0(run, data, resume=True)
    assert result.resumed_from.endswith("checkpoint-3")
    resumed = load_file(final)
    assert uninterrupted.keys() == resumed.keys()
    diff = max(float((uninterrupted[k].float() - resumed[k].float()).abs().max()) for k in uninterrupted)
    assert diff < 1e-5, f"resumed run differs by {diff}"


def test_stage0_refine_continues_from_the_first_phase_and_reports_both(cfg):
    from safetensors.torch import load_file

    from surgvqa.datastep import load_run_data

    args = {"num_train_epochs": 1, "per_device_train_batch_size": 1, "eval_strategy": "no", "save_strategy": "no",
            "logging_steps": 1}
    one = dataclasses.replace(cfg, train=TrainConfig(stage0=args, stage0_refine={}))
    two = dataclasses.replace(one, train=dataclasses.replace(one.train, stage0_refine={"learning_rate": 1e-4}))
    assert checkpoints.stage_stamp(one, "stage0") != checkpoints.stage_stamp(two, "stage0")
    data = load_run_data(one)
    final = checkpoints.stage_dir(one, "stage0") / "final" / "model.safetensors"
    first = stages.train_stage0(one, data, resume=False)
    first_weights = load_file(final)
    both = stages.train_stage0(two, data, resume=False)
    assert both.global_step == 2 * first.global_step > 0 and both.epochs == 2 * first.epochs
    steps = [h["step"] for h in both.log_history if "loss" in h]
    assert steps == sorted(steps) and steps[-1] == both.global_step  # the second phase logs after the first
    assert (checkpoints.stage_dir(two, "stage0") / "refine").is_dir()
    from surgvqa.training_report import loss_curves

    curve, _ = loss_curves(both, two.paths.logs / "stage0")  # the figure shows both phases, not the first alone
    assert list(curve["step"]) == steps
    refined = load_file(final)
    assert max(float((refined[k] - first_weights[k]).abs().max()) for k in refined) > 0  # it trained further
    assert stages.train_stage0(two, data).reused  # and a rerun reuses both phases


def test_wer_tiebreak_orders_equal_wers_by_loss_and_never_overrides_a_word():
    from surgvqa.trainer import LOSS_CAP, wer_tiebroken

    words = 400
    # a model that cannot write scores the same WER every epoch: the lower loss wins
    assert wer_tiebroken(399, words, 2.0) < wer_tiebroken(399, words, 3.0)
    # one word fewer wrong beats any loss, even a saturated one against zero
    assert wer_tiebroken(398, words, LOSS_CAP * 10) < wer_tiebroken(399, words, 0.0)
    assert wer_tiebroken(0, words, 0.0) == 0.0
    assert abs(wer_tiebroken(100, words, 1.0) - 100 / words) < 0.5 / words


def test_stage1_selection_caps_each_utterances_errors_at_its_words():
    from surgvqa.metrics import edit_counts
    from surgvqa.trainer import capped_word_errors, wer_tiebroken

    refs = ["is the scope outside", "flush the lumen now"]
    empty = edit_counts(["", ""], refs)  # epoch 1: writes nothing
    babble = edit_counts(["yes no the the polyp is seen here", "withdraw slowly a b c d e"], refs)  # later: writes, wrongly
    assert babble["word_errors"].sum() > empty["word_errors"].sum()  # uncapped, the empty projector looks better
    assert capped_word_errors(babble) == capped_word_errors(empty) == 8
    # capped, the two tie and the lower loss (the further-trained projector) wins
    assert wer_tiebroken(capped_word_errors(babble), 8, 6.6) < wer_tiebroken(capped_word_errors(empty), 8, 7.5)
    close = edit_counts(["is the scope outside", "flush the lumen"], refs)
    assert capped_word_errors(close) == 1 and wer_tiebroken(1, 8, 9.0) < wer_tiebroken(8, 8, 0.0)


def test_best_logged_reads_the_kept_checkpoints_evaluation():
    from types import SimpleNamespace

    from surgvqa.trainer import best_logged

    history = [{"loss": 3.0, "step": 10}, {"eval_wer": 0.9, "step": 10}, {"eval_wer": 0.8, "step": 20},
               {"eval_wer": 0.85, "step": 30}]
    state = SimpleNamespace(log_history=history, best_global_step=20)
    assert best_logged(state, "eval_wer") == 0.8
    assert best_logged(state, "eval_missing") is None
    assert best_logged(SimpleNamespace(log_history=history, best_global_step=None), "eval_wer") == 0.85


def test_a_stage_stamp_covers_the_code_that_trains_it(stamped, monkeypatch, tmp_path):
    names = {p.name for p in checkpoints.training_code_files()}
    assert {"stages.py", "trainer.py", "training_data.py", "collate.py", "models.py", "tiny_vlm.py",
            "modeling_qwen2_vl_audio.py", "processing_qwen2_vl_audio.py"} <= names
    assert not names & {"evaluate.py", "report.py", "sight.py", "pipeline.py"}  # evaluating never retrains
    before = {s: checkpoints.stage_stamp(stamped, s) for s in STAGE_INPUTS}
    source = tmp_path / "trainer.py"
    source.write_text("x = 1\n")
    monkeypatch.setattr(checkpoints, "training_code_files", lambda: [source])
    checkpoints.training_code_hash.cache_clear()
    try:
        first = checkpoints.training_code_hash()
        source.write_text("x = 2\n")  # one changed line of training code
        checkpoints.training_code_hash.cache_clear()
        assert checkpoints.training_code_hash() != first
        assert all(checkpoints.stage_stamp(stamped, s) != before[s] for s in STAGE_INPUTS)
    finally:
        checkpoints.training_code_hash.cache_clear()


def test_a_comment_or_docstring_edit_keeps_the_code_hash(tmp_path):
    source = tmp_path / "trainer.py"

    def hashed(text: str) -> str:
        source.write_text(text)
        return checkpoints.code_hash([source])

    first = hashed('"""Module."""\ndef f(x):\n    """Twice x."""\n    return 2 * x  # doubled\n')
    assert hashed('"""Another text."""\n\ndef f(x):\n    # why: doubled\n    return 2 * x\n') == first
    assert hashed('def f(x):\n    """Twice x."""\n    return 3 * x\n') != first  # a statement changed
    assert hashed('def f(x):\n    return "2 * x"\n') != hashed('def f(x):\n    "2 * x"\n    return 2 * x\n')
