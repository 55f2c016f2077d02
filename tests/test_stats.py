"""Clustered, paired statistics (surgvqa.stats): the properties a reviewer checks."""
import numpy as np
import pandas as pd
import pytest

from surgvqa import stats


def scored_rows(n_clips: int = 60, per_clip: int = 10, seed: int = 0):
    """Yes/no rows of two types, `per_clip` per clip, whose correctness is shared within a clip (a clip is easy
    or hard for the system): strongly correlated rows, as in the evaluation."""
    rng = np.random.default_rng(seed)
    clips, types, truths, hits = [], [], [], []
    for c in range(n_clips):
        easy = rng.random() < 0.6
        for q in range(per_clip):
            clips.append(f"clip{c}")
            types.append("blue_dye_presence" if q % 2 else "tool_catheter_check")
            truths.append("yes" if rng.random() < 0.3 else "no")
            hits.append(1.0 if easy else float(rng.random() < 0.2))
    return np.array(clips), np.array(types), np.array(truths), np.array(hits)


def test_clustered_intervals_are_wider_than_row_intervals_on_correlated_rows():
    clips, types, truths, hits = scored_rows()
    cells = stats.BalancedCells(types, truths)
    rows = np.arange(len(clips))
    width = lambda w, f: np.subtract(*stats.estimate(f, w)["ci95"][::-1])  # noqa: E731
    accuracy = lambda w: stats.weighted_mean(w, hits)  # noqa: E731
    assert width(stats.replicate_weights(clips, n_boot=2000, seed=1), accuracy) > \
        1.8 * width(stats.replicate_weights(rows, n_boot=2000, seed=1), accuracy)
    macro = lambda w: cells.macro(w, hits)  # noqa: E731
    assert width(stats.replicate_weights(clips, cells.strata, n_boot=2000, seed=1), macro) > \
        1.3 * width(stats.replicate_weights(rows, cells.strata, n_boot=2000, seed=1), macro)


def test_rows_of_a_cluster_share_a_weight_and_each_stratum_keeps_its_size():
    clips = np.array(["a", "a", "b", "c", "c", "d"])
    w = stats.replicate_weights(clips, n_boot=200, seed=0)
    assert w.shape == (200, 6) and np.array_equal(w[:, 0], w[:, 1]) and np.array_equal(w[:, 3], w[:, 4])
    assert ((w == 0).any(axis=0)).all()  # every cluster is left out of some replicate
    counts = w[:, [0, 2, 3, 5]]  # one column per cluster
    assert (counts.sum(1) == 4).all()  # four clusters drawn four times
    strata = np.array(["x", "x", "x", "y", "y", "y"])
    ws = stats.replicate_weights(clips, strata, n_boot=200, seed=0)
    assert (ws[:, [0, 2]].sum(1) == 2).all() and (ws[:, [3, 5]].sum(1) == 2).all()


def test_videos_are_the_clusters_only_when_there_are_enough():
    clips = [f"c{i}" for i in range(12)]
    assert list(stats.clusters_of(clips, [f"v{i // 6}" for i in range(12)])) == clips  # two videos: by clip
    six = [f"v{i // 2}" for i in range(12)]
    assert list(stats.clusters_of(clips, six)) == six


def test_the_majority_baselines_macro_balanced_interval_contains_its_point():
    clips, types, truths, _ = scored_rows()
    cells = stats.BalancedCells(types, truths)
    majority = cells.hits(["no"] * len(types))  # a constant answer
    result = stats.estimate(lambda w: cells.macro(w, majority), stats.replicate_weights(clips, cells.strata, n_boot=500))
    lo, hi = result["ci95"]
    assert result["value"] == pytest.approx(0.5) and lo <= result["value"] <= hi  # 1/K in every replicate


def test_a_rare_class_is_never_lost_from_a_replicate():
    # one clip of 40 holds the only "yes": resampling rows of the type drops it from a third of the replicates
    types = np.array(["tool_catheter_check"] * 40)
    truths = np.array(["yes"] + ["no"] * 39)
    hits = np.array([0.0] + [1.0] * 39)  # the system always says "no": balanced 0.5
    cells = stats.BalancedCells(types, truths)
    reps = cells.macro(stats.replicate_weights(np.arange(40), cells.strata, n_boot=300, seed=3), hits)
    assert np.allclose(reps, 0.5)


def test_a_system_against_itself_differs_by_exactly_zero():
    clips, types, truths, hits = scored_rows()
    cells = stats.BalancedCells(types, truths)
    w = stats.replicate_weights(clips, cells.strata, n_boot=300)
    for statistic in (lambda w: stats.weighted_mean(w, hits), lambda w: cells.macro(w, hits)):
        d = stats.paired_difference(statistic, statistic, w)
        assert d["diff"] == 0.0 and d["ci95"] == (0.0, 0.0) and not d["shown"]


def test_a_claim_is_shown_only_when_the_paired_interval_clears_the_margin():
    clips, types, truths, hits = scored_rows()
    cells = stats.BalancedCells(types, truths)
    better = np.maximum(hits, (np.arange(len(hits)) % 3 == 0).astype(float))  # right on a third more rows
    w = stats.replicate_weights(clips, cells.strata, n_boot=500)
    a, b = (lambda w: cells.macro(w, better)), (lambda w: cells.macro(w, hits))
    gain = stats.paired_difference(a, b, w)
    assert gain["diff"] > 0 and gain["shown"] and gain["ci95"][0] > 0
    assert not stats.paired_difference(a, b, w, margin=gain["diff"])["shown"]  # a margin at the point is not cleared
    within = stats.paired_difference(b, a, w, margin=-0.5)  # "b within 50 points of a": shown
    assert within["shown"] and within["diff"] < 0


def test_holm_adjusts_in_order_and_stays_monotone():
    adjusted = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5})
    assert adjusted == pytest.approx({"a": 0.04, "c": 0.09, "b": 0.09, "d": 0.5})


def test_beats_majority_needs_a_significant_per_type_win():
    clips, types, truths, hits = scored_rows(n_clips=80)
    cells = stats.BalancedCells(types, truths)
    majority = cells.hits(["no"] * len(types))
    w = stats.replicate_weights(clips, cells.strata, n_boot=1000)
    perfect = stats.beats_majority(cells, np.ones(len(types)), majority, w)
    assert perfect["beats"].all() and (perfect["p_holm"] < 0.05).all()
    assert not stats.beats_majority(cells, majority, majority, w)["beats"].any()  # the majority does not beat itself
    one_row = majority.copy()
    one_row[np.flatnonzero(truths == "yes")[0]] = 1.0  # right on one more row: not a win
    assert not stats.beats_majority(cells, one_row, majority, w)["beats"].any()


def predictions_frame(n_clips: int = 30):
    """Two systems and the majority answer scored on the same held-out-video rows, as the evaluation frames them."""
    clips, types, truths, hits = scored_rows(n_clips=n_clips)
    rows = []
    for system, right in (("audio_finetuned", hits), ("text_finetuned", np.ones(len(hits))), ("majority", None)):
        for i, (clip, qtype, truth) in enumerate(zip(clips, types, truths)):
            pred = "no" if right is None else (truth if right[i] else ("yes" if truth == "no" else "no"))
            rows.append({"system": system, "id": f"q{i}", "video_id": clip.replace("clip", "v"), "template": "out",
                         "voice": "v1", "split": "heldout_video", "clip": clip, "question_type": qtype,
                         "short_answer": truth, "prediction": pred, "correct": pred == truth})
    import pandas as pd

    return pd.DataFrame(rows)


def test_the_evaluation_reports_every_claim_as_a_paired_comparison():
    from surgvqa import evaluate
    from surgvqa.config import EvalConfig

    frame = predictions_frame()
    bal = evaluate.BALANCED
    claims = (("audio_finetuned", "text_finetuned", -0.03, ("heldout_video",), bal),
              ("text_finetuned", "majority", 0.0, ("heldout_video",), bal),
              ("text_finetuned", "text_finetuned", 0.0, ("heldout_video",), bal),
              ("text_finetuned", "audio_finetuned", 0.0, ("heldout_video",), "accuracy"))
    graft_vs_text, text_vs_majority, itself, exact = evaluate.paired_comparisons(frame, EvalConfig(bootstrap=300), claims)
    assert set(graft_vs_text) == {"a", "b", "split", "metric", "rows", "diff", "ci95", "margin", "shown"}
    assert graft_vs_text["diff"] < -0.03 and not graft_vs_text["shown"]  # far from within 3 points
    assert text_vs_majority["diff"] == 0.5 and text_vs_majority["shown"]  # perfect vs 1/2 on yes/no types
    assert itself["diff"] == 0.0 and itself["ci95"] == [0.0, 0.0] and not itself["shown"]
    graft = frame[frame.system == "audio_finetuned"]
    assert exact["metric"] == "accuracy" and exact["diff"] == 1 - graft["correct"].mean()  # exact accuracy, paired
    assert exact["ci95"][0] <= exact["diff"] <= exact["ci95"][1]
    summary = evaluate.summarize_balanced(frame[frame.system == "text_finetuned"], {}, EvalConfig(bootstrap=300))
    lo, hi = summary["balanced_ci95"]["heldout_video"]
    assert summary["balanced_accuracy"]["heldout_video"] == 1.0 and lo <= 1.0 <= hi
    assert summary["types_beating_majority"] == summary["types_tested_against_majority"] == 2


def test_long_answers_are_compared_paired_and_clustered():
    import pandas as pd

    from surgvqa import evaluate
    from surgvqa.config import EvalConfig

    rows = [{"system": s, "video_id": f"v{i % 4}", "clip": f"c{i // 3}", "id": f"q{i}", "keyword_hit": hit}
            for s, hits in (("audio_finetuned", [i % 2 == 0 for i in range(60)]), ("text_finetuned", [True] * 60))
            for i, hit in enumerate(hits)]
    (claim,) = evaluate.long_answer_comparison(pd.DataFrame(rows), EvalConfig(bootstrap=300))
    assert claim["metric"] == "long_keyword_accuracy" and claim["diff"] == -0.5 and not claim["shown"]
    assert claim["ci95"][0] < -0.5 < claim["ci95"][1]
    assert evaluate.long_answer_comparison(pd.DataFrame(), EvalConfig()) == []


def test_the_per_type_table_uses_the_one_test_of_beating_the_majority():
    from surgvqa import evaluation_report
    from surgvqa.config import EvalConfig

    table = evaluation_report.balance_by_type(predictions_frame(), EvalConfig(bootstrap=300))
    text, majority = table.loc["text_finetuned"], table.loc["majority"]
    assert text["beats_majority"].all() and (text["p_holm"] < 0.05).all()  # perfect on both varying types
    assert not majority["beats_majority"].any()  # the majority answer never beats itself


def test_wer_intervals_draw_a_sentences_recordings_together():
    from surgvqa import evaluate, metrics
    from surgvqa.config import EvalConfig

    refs = [f"sentence number {i} about the scope" for i in range(10) for _ in range(2)]  # each by two voices
    hyps = [r if i < 10 else "wrong words entirely here now" for i, r in enumerate(refs)]  # half the sentences misheard
    options = EvalConfig(bootstrap=400)
    by_sentence = evaluate.wer_cer_ci(hyps, refs, options)
    by_recording = evaluate.wer_cer_ci(hyps, refs, options, clusters=range(len(refs)))
    assert by_sentence["wer"] == by_recording["wer"] == metrics.wer_cer(hyps, refs)["wer"]
    assert by_sentence["cer"] == metrics.wer_cer(hyps, refs)["cer"] and by_sentence["n"] == len(refs)
    width = lambda r: r["wer_ci95"][1] - r["wer_ci95"][0]  # noqa: E731
    assert width(by_sentence) > width(by_recording)  # correlated recordings: fewer independent units
    perfect = evaluate.wer_cer_ci(refs, refs, options)
    assert perfect["wer"] == 0 and perfect["wer_ci95"] == [0.0, 0.0]


def test_transcription_claims_are_paired_on_the_same_recordings():
    import pandas as pd

    from surgvqa import evaluate
    from surgvqa.config import EvalConfig

    refs = [f"is there a polyp in view number {i}" for i in range(12) for _ in range(2)]
    frame = pd.DataFrame({"set": "in_domain", "reference": refs, "graft": refs, "graft_noisy": refs,
                          "whisper_base": [r.replace("polyp", "pulp") for r in refs],
                          "whisper_base_noisy": refs})
    clean, noisy = evaluate.transcription_comparisons(frame, EvalConfig(bootstrap=300))
    assert (clean["split"], clean["scale"], clean["metric"]) == ("in_domain", 0.5, "wer")
    assert clean["diff"] == pytest.approx(0.5 / 8) and clean["shown"]  # one word in eight, halved, vs none
    assert noisy["diff"] == 0.0 and not noisy["shown"]  # equal: "below whisper" is not shown


def test_one_system_on_two_respoken_copies_is_paired_by_base_row():
    from surgvqa import evaluate
    from surgvqa.config import EvalConfig

    frame = predictions_frame()
    graft = frame[frame.system == "audio_finetuned"]
    voice = graft.assign(split="heldout_voice", id=graft["id"] + "_hv")
    engine = graft.assign(split="heldout_engine", id=graft["id"] + "_he")
    (same,) = evaluate.split_comparisons(pd.concat([voice, engine]), EvalConfig(bootstrap=200))
    assert same["diff"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["shown"]  # identical answers clear -5 points
    deaf = engine.assign(prediction="no")
    (worse,) = evaluate.split_comparisons(pd.concat([voice, deaf]), EvalConfig(bootstrap=200))
    assert worse["diff"] < -0.05 and not worse["shown"] and worse["rows"] == len(graft)


def test_the_held_out_engines_wer_is_compared_on_the_same_texts():
    from surgvqa import evaluate
    from surgvqa.config import EvalConfig

    refs = [f"is there a polyp in view number {i}" for i in range(10)]
    frame = pd.concat([pd.DataFrame({"set": "in_domain", "reference": refs, "graft": refs}),
                       pd.DataFrame({"set": "engine_in_domain", "reference": refs,
                                     "graft": [r.replace("polyp", "pulp") for r in refs]})])
    (claim,) = evaluate.engine_wer_comparison(frame, EvalConfig(bootstrap=200))
    assert claim["scale"] == 2.0 and claim["diff"] == pytest.approx(-1 / 8) and not claim["shown"]
    assert evaluate.engine_wer_comparison(frame[frame.set == "in_domain"], EvalConfig()) == []
