"""The sight check: answer spread per type, pixel features, and the linear probe (hand-made and synthetic clips)."""
import numpy as np
import pandas as pd
import pytest

from surgvqa import sight, synthetic
from surgvqa.schema import QUESTION_TYPES

PRIORS = {"lesion": 0.6, "tool": 0.5}


@pytest.fixture(scope="module")
def clips():
    """20 synthetic clips of 2 videos: their rows (`in` wording) and rendered frames."""
    by_template, scenes = synthetic.generate(0, 2, 10, 8, 56, PRIORS)
    return by_template["in"], [synthetic.render_clip(sc, 56)[0] for sc in scenes]


def test_prediction_distribution_flags_a_constant_type():
    df = pd.DataFrame({"question_type": ["flush_action"] * 3 + ["lighting_mode"] * 2,
                       "short_answer": ["yes", "no", "no", "NBI", "white light"],
                       "prediction": ["no", "no", "No.", "NBI", "white light"]})
    table = sight.prediction_distribution(df)
    assert table.loc["flush_action", "constant"] and table.loc["flush_action", "predicted"] == "no 100%"
    assert not table.loc["lighting_mode", "constant"] and table.loc["lighting_mode", "distinct_predictions"] == 2


def test_clip_labels_are_one_per_clip(clips):
    rows, frames = clips
    order, paths, labels = sight.clip_labels(rows)
    assert len(order) == len(frames) == 20 and all(len(paths[c]) == 8 for c in order)
    assert all(set(a) <= set(QUESTION_TYPES) and "lighting_mode" in a for a in labels.values())


def test_pixel_probe_reads_lighting_and_a_shuffled_label_does_not(clips):
    rows, frames = clips
    order, _, labels = sight.clip_labels(rows)
    feats = {"pixels": {c: sight.pixel_features(f) for c, f in zip(order, frames)}}
    table = sight.probe_table(feats, labels, order[:14], order[14:])
    assert {"pixels", "chance", "train_clips", "eval_clips"} <= set(table.columns) and len(table) == len(QUESTION_TYPES)
    lighting = table.loc["lighting_mode", "pixels"]
    assert np.isnan(lighting) or lighting >= 0.75  # NaN only when the held-out clips show one lighting
    noise = {"pixels": {c: np.random.default_rng(i).normal(size=16).astype(np.float32) for i, c in enumerate(order)}}
    assert table["pixels"].mean() > sight.probe_table(noise, labels, order[:14], order[14:])["pixels"].mean()


class _Ex:  # the two attributes ranking_table reads
    def __init__(self, qtype, answer):
        self.meta, self.answer = {"question_type": qtype}, answer


def test_ranking_table_tells_a_prior_bound_model_from_a_blind_one():
    from collections import Counter
    candidates = {"flush_action": Counter(yes=10, no=90), "blue_dye_presence": Counter(yes=10, no=90),
                  "lighting_mode": Counter({"white light": 5})}
    examples, scores = [], []
    for truth in ["yes"] * 3 + ["no"] * 7:
        # flush: the scores separate the classes, but "no" always tops them (a prior-bound model)
        examples.append(_Ex("flush_action", truth))
        scores.append({"yes": -3.0, "no": -1.0} if truth == "yes" else {"yes": -5.0, "no": -0.1})
        # blue dye: the same scores whatever the clip (a blind model)
        examples.append(_Ex("blue_dye_presence", truth))
        scores.append({"yes": -4.0, "no": -0.2})
    examples.append(_Ex("lighting_mode", "white light"))  # one answer on the split: not scored
    scores.append({"white light": -0.1})
    table = sight.ranking_table(examples, scores, candidates)
    assert set(table.index) == {"flush_action", "blue_dye_presence"}
    flush, dye = table.loc["flush_action"], table.loc["blue_dye_presence"]
    assert flush.ranking_auroc == 1.0 and flush.likelihood_balanced == 0.5 and flush.prior_divided_balanced == 1.0
    assert dye.ranking_auroc == 0.5 and dye.likelihood_balanced == 0.5 and dye.prior_divided_balanced == 0.5


def test_pooled_tower_features_keep_a_one_token_detail_that_the_mean_dilutes():
    import torch

    t, h, w, d = 4, 4, 4, 3
    plain = torch.zeros(t, h, w, d)
    spotted = plain.clone()
    spotted[1, 3, 0, 2] = 1.0  # one token (a small lesion), in frame step 1, bottom-left quadrant
    a, b = sight.pool_tokens(plain), sight.pool_tokens(spotted)
    regions = 1 + t + 4
    assert a.shape == (2 * regions * d,)
    means, maxes = (b - a)[: regions * d].reshape(regions, d), (b - a)[regions * d :].reshape(regions, d)
    assert float(means.abs().max()) <= 1.0 / (h * w)  # averaged over a whole region it nearly vanishes
    # the max keeps it, in the whole clip, its frame step and its quadrant only
    hit = {int(i) for i in torch.nonzero(maxes[:, 2]).flatten()}
    assert hit == {0, 1 + 1, 1 + t + 2} and float(maxes[:, :2].abs().max()) == 0.0


def test_the_random_tower_control_is_not_the_models_own_frozen_tower():
    import torch

    from surgvqa.sight import random_tower_like
    from surgvqa.tiny_vlm import build_tiny_qwen2_vl

    sizes = dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                 vision_depth=1, vision_embed_dim=32, vision_num_heads=2, vocab_size=300)
    model, _, _ = build_tiny_qwen2_vl(["is a tool visible", "no", "yes"] * 20, seed=0, **sizes)
    own = dict(model.model.visual.named_parameters())
    control = dict(random_tower_like(model).visual.named_parameters())
    assert own.keys() == control.keys()
    assert not any(torch.equal(own[k], control[k]) for k in own if own[k].std() > 0)  # other weights everywhere


def test_local_probe_reads_a_region_from_the_token_that_holds_it():
    from surgvqa import sight

    rng = np.random.default_rng(0)
    clips = [f"c{i}" for i in range(24)]
    seen = {c: (rng.random((2, 2, 2, 2)) < 0.3).astype(np.float32) for c in clips}
    informative = {c: np.concatenate([seen[c][..., :1] * 2 - 1 + 0.1 * rng.standard_normal((2, 2, 2, 1)),
                                      rng.standard_normal((2, 2, 2, 3))], axis=-1) for c in clips}
    noise = {c: rng.standard_normal((2, 2, 2, 4)) for c in clips}
    table = sight.local_probe_table({"tells": informative, "noise": noise}, seen, ["lesion", "tool"], clips[:16], clips[16:])
    assert list(table.index) == ["lesion", "tool"]
    assert table.loc["lesion", "tells"] > 0.95  # the first feature is the lesion mask
    assert abs(table.loc["lesion", "noise"] - 0.5) < 0.25 and abs(table.loc["tool", "tells"] - 0.5) < 0.25
    assert table.loc["lesion", "train_tokens_seen"] == int(sum(seen[c][..., 0].sum() for c in clips[:16]))


def test_token_colour_features_are_per_token_means_and_spreads():
    from surgvqa import sight

    clip = np.zeros((2, 56, 56, 3), dtype=np.uint8)
    clip[:, :28, :28, 0] = 255  # the top-left token is red
    f = sight.token_pixel_features(clip)
    assert f.shape == (1, 2, 2, 6) and f[0, 0, 0, 0] == pytest.approx(1.0) and f[0, 1, 1, :3].sum() == 0


def test_types_no_pixel_probe_reads_are_named():
    from surgvqa import sight

    table = pd.DataFrame({"pixels": [0.9, 0.36, np.nan], "colour_texture": [0.95, 0.30, np.nan],
                          "chance": [0.5, 0.333, 0.5]}, index=["blue_dye_presence", "lesion_size_range", "scope_outside"])
    assert sight.not_in_the_pixels(table) == ["lesion_size_range"]
