"""The two held-out-voice transcription test sets: in-domain sentences (trained texts, new voices) and unseen ones."""
import pytest

from surgvqa import datastep, speech
from surgvqa.evaluate import transcription_sets


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    audio_dir = tmp_path_factory.mktemp("corpus") / "audio"
    audio_dir.mkdir()
    voices = speech.VOICES[:4]
    return datastep.build_speech_corpus(
        ["Is there blue dye?", "Is the scope advancing?", "Can you see a polyp?", "Is a snare visible?"],
        ["Yes, there is.", "No, it is not.", "A small polyp."], ["The scope is withdrawn slowly.", "Flushing the lumen now."],
        train_voices=voices[:2], heldout_voices=voices[2:], audio_dir=audio_dir, seed=3, unseen_texts=2,
        trained=TRAINED, voices_per_text=1, noise_snr_db=None, cache={}), voices, audio_dir.parent


TRAINED = {"Is there blue dye?", "Is the scope advancing?", "Can you see a polyp?", "Is a snare visible?",
           "Yes, there is.", "No, it is not."}  # what the training rows say: never unseen


def test_unseen_texts_are_drawn_from_untrained_texts(corpus):
    entries, _, _ = corpus
    unseen = {e["text"] for e in entries if e["split"] in ("val", "test")}
    assert len(unseen) == 2
    assert not unseen & {datastep.speakable(t) for t in TRAINED}
    assert not unseen & {e["text"] for e in entries if e["split"] == "train"}


def test_in_domain_set_is_trained_text_by_heldout_voices(corpus):
    entries, voices, _ = corpus
    heldout = {v.name for v in voices[2:]}
    trained = {e["text"] for e in entries if e["split"] == "train"}
    in_domain = [e for e in entries if e["split"] == "test_in_domain"]
    unseen = [e for e in entries if e["split"] == "test"]
    assert in_domain and unseen
    assert {e["voice"] for e in in_domain} == heldout == {e["voice"] for e in unseen}
    assert {e["text"] for e in in_domain} <= trained  # heard in stage 1, from other voices only
    assert not {e["text"] for e in unseen} & trained
    assert all(e["kind"] != "narration" for e in in_domain)
    assert len(in_domain) == len(unseen)  # as many sentences in each set, each spoken by every held-out voice
    assert len({e["id"] for e in entries}) == len(entries)


def test_transcription_sets_pick_their_split_with_absolute_audio(corpus):
    entries, _, data_dir = corpus
    sets = transcription_sets(entries, data_dir)
    assert set(sets) == {"in_domain", "unseen", "engine_in_domain", "engine_unseen"}
    assert sets["engine_in_domain"] == sets["engine_unseen"] == []  # this corpus has no held-out engine
    assert [e["id"] for e in sets["in_domain"]] == [e["id"] for e in entries if e["split"] == "test_in_domain"]
    assert all((data_dir / e["audio"]).is_file() for e in entries)
    assert all(e["audio"].startswith(str(data_dir)) for s in sets.values() for e in s)
    capped = transcription_sets(entries, data_dir, max_per_set=1, seed=0)
    assert all(len(v) == 1 for k, v in capped.items() if not k.startswith("engine_"))
    assert capped == transcription_sets(entries, data_dir, max_per_set=1, seed=0)  # seeded


def test_unseen_speech_shares_no_text_with_any_training_pool(tmp_path_factory, smoke_audio):
    """The unseen transcription test and the stage-1 val (which picks stage 1's checkpoint) against every text the
    stages draw from the data step: the transcription pool (stages 1 and 2), the questions read and heard and the
    short and long answers of the training conversations (stages 0 and 2)."""
    from surgvqa import training_data
    from surgvqa.answers import normalize_short
    from surgvqa.collate import vqa_examples
    from surgvqa.config import REPO_ROOT, Config

    cfg = Config.from_yaml(REPO_ROOT / "params" / "smoke.yaml", {"run_root": str(tmp_path_factory.mktemp("leak"))})
    smoke_audio(cfg.paths.data)
    splits, corpus = datastep.load_run_data(cfg)

    def norm(texts):
        return {normalize_short(datastep.speakable(t)) for t in texts}

    train = splits["train"]
    pools = {
        "transcription pool": norm(ex.answer for ex in training_data.transcription_pool(cfg, splits, corpus)),
        "questions read": norm(ex.question for ex in vqa_examples(train, "text")),
        "short answers": norm(ex.answer for ex in vqa_examples(train, "audio")),
        "long answers": norm(r["answer"] for r in train.rows),
    }
    unseen = {name: norm(e["text"] for e in corpus if e["split"] == split)
              for name, split in (("stage-1 val", "val"), ("unseen test", "test"))}
    assert all(unseen.values()) and unseen["stage-1 val"] == unseen["unseen test"]
    assert all(pools.values())
    for name, texts in unseen.items():
        for pool, trained in pools.items():
            assert not texts & trained, f"{name} shares {sorted(texts & trained)[:3]} with the {pool}"
