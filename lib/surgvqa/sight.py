"""Sight check: does a model (or its vision tower) see what the questions ask about?

Three diagnostics, each a pure function of data + model:

* `prediction_distribution` - per question type, how a system's answers are spread; a type
  answered with one constant string is a blind type (`metrics.per_type_balance` has the numbers).
* `clip_labels` + `pixel_features` + `tower_features` + `probe_table` - linear probes per question
  type: multinomial logistic regression (torch, L2) on features of each clip against the clip's
  scene label, trained on training clips and scored by balanced accuracy on other clips. The same
  probe on raw pixel statistics says whether the attribute is in the pixels at all; on a random-init
  tower, whether the architecture keeps it; on the model's own tower (frozen at its initialisation),
  whether what the language model is given holds it.

* `answer_scores` + `ranking_table` - the model's own ranking of the answers: per row, the log-likelihood of
  every training answer of its type. Per type, its one-vs-rest AUROC (0.5: the scores carry nothing about
  the clip) and the balanced accuracy of the top-scored answer with the training prior divided out (the
  decision rule for balanced accuracy). A constant answer with a high AUROC sees but decides by the prior;
  with an AUROC near 0.5 it does not see.

Features are per clip (8 frames): one row per clip, never per question.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .answers import canonical_answer
from .data import clip_key
from .metrics import balanced_accuracy
from .schema import QUESTION_TYPES


# ---- predictions ---------------------------------------------------------------------------------


def prediction_distribution(df: pd.DataFrame, pred_col: str = "prediction", top: int = 4) -> pd.DataFrame:
    """Per question type: distinct predictions, the most frequent ones with their share, and the truth's."""
    rows = {}
    for qtype, g in df.groupby("question_type", sort=True):
        pred = Counter(canonical_answer(p, qtype) for p in g[pred_col])
        true = Counter(canonical_answer(t, qtype) for t in g["short_answer"])
        n = len(g)
        rows[qtype] = {
            "n": n,
            "distinct_predictions": len(pred),
            "constant": len(pred) == 1,
            "predicted": ", ".join(f"{a} {c / n:.0%}" for a, c in pred.most_common(top)),
            "truth": ", ".join(f"{a} {c / n:.0%}" for a, c in true.most_common(top)),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


# ---- the model's own ranking of the answers ------------------------------------------------------------


def answer_candidates(train_rows: Iterable[dict]) -> dict[str, Counter]:
    """Per question type, the training short answers with their counts (the candidates, and the prior)."""
    out: dict[str, Counter] = defaultdict(Counter)
    for r in train_rows:
        out[r["question_type"]][r["short_answer"]] += 1
    return dict(out)


@torch.no_grad()
def answer_scores(model, collator, examples: Sequence, candidates: dict[str, Counter], batch_size: int = 64,
                  progress: bool = True) -> list[dict[str, float]]:
    """Per example, {candidate: summed log-likelihood of its answer tokens} over its type's candidates
    (teacher-forced with the training collator: the same prompt as the greedy answer)."""
    from tqdm.auto import tqdm

    if not collator.training:
        raise ValueError("answer_scores needs a training collator (the candidate answer in the prompt, labels on it)")
    model.eval()
    items = [(i, c) for i, ex in enumerate(examples) for c in sorted(candidates[ex.meta["question_type"]])]
    scores: list[dict[str, float]] = [{} for _ in examples]
    for start in tqdm(range(0, len(items), batch_size), desc="answer scores", disable=not progress, leave=False):
        chunk = items[start:start + batch_size]
        batch = collator([replace(examples[i], answer=c) for i, c in chunk])
        labels = batch.pop("labels")[:, 1:]
        batch = {k: (v.to(model.device) if hasattr(v, "to") else v) for k, v in batch.items()}
        logp = torch.log_softmax(model(**batch).logits[:, :-1].float(), -1).cpu()
        mask = labels != -100
        token = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        for (i, c), total in zip(chunk, (token * mask).sum(-1).tolist()):
            scores[i][c] = total
    return scores


def text_ranking(model, processor, splits: dict, eval_rows, split: str = "heldout_video", vision_cache=None,
                 batch_size: int = 64) -> pd.DataFrame:
    """`ranking_table` of a model reading the questions, on the evaluation's rows of `split`."""
    from .collate import Collator, vqa_examples
    from .data import Dataset

    rows = [r for r in eval_rows.rows if r["split"] == split]
    examples = vqa_examples(Dataset(rows, eval_rows.root, eval_rows.audio_root), "text")
    candidates = answer_candidates(splits["train"].rows)
    scores = answer_scores(model, Collator(processor, vision_cache=vision_cache), examples, candidates, batch_size)
    return ranking_table(examples, scores, candidates)


def _auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(a positive outscores a negative), ties counting half (Mann-Whitney)."""
    pos, neg = np.asarray(positive, float)[:, None], np.asarray(negative, float)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def ranking_table(examples: Sequence, scores: Sequence[dict[str, float]], candidates: dict[str, Counter]) -> pd.DataFrame:
    """Per question type whose rows' answers vary: `ranking_auroc` (one-vs-rest over the classes present, on
    scores normalised over the candidates), `likelihood_balanced` (the top-scored answer) and
    `prior_divided_balanced` (the top of score - log training prior)."""
    by_type: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_type[ex.meta["question_type"]].append(i)
    rows = {}
    for qtype, idx in sorted(by_type.items()):
        truth = [examples[i].answer for i in idx]
        if len(set(canonical_answer(t, qtype) for t in truth)) < 2:
            continue
        total = sum(candidates[qtype].values())
        log_prior = {c: np.log(n / total) for c, n in candidates[qtype].items()}
        top = [max(scores[i], key=scores[i].get) for i in idx]
        adjusted = [max(scores[i], key=lambda c: scores[i][c] - log_prior[c]) for i in idx]
        normalised = [{c: v - np.logaddexp.reduce(list(scores[i].values())) for c, v in scores[i].items()} for i in idx]
        aucs = []
        for cls in sorted(set(truth)):
            if cls not in candidates[qtype]:
                continue  # an answer never trained has no score
            pos = [n[cls] for n, t in zip(normalised, truth) if t == cls]
            neg = [n[cls] for n, t in zip(normalised, truth) if t != cls]
            aucs.append(_auroc(pos, neg))
        rows[qtype] = {"ranking_auroc": float(np.mean(aucs)) if aucs else float("nan"),
                       "likelihood_balanced": balanced_accuracy(top, truth, qtype),
                       "prior_divided_balanced": balanced_accuracy(adjusted, truth, qtype)}
    return pd.DataFrame.from_dict(rows, orient="index")


# ---- labels and features per clip ------------------------------------------------------------------


def clip_labels(rows: Iterable[dict]) -> tuple[list[str], dict[str, tuple[str, ...]], dict[str, dict[str, str]]]:
    """(clip keys in first-seen order, clip -> frame paths, clip -> {question_type: short answer})."""
    order: list[str] = []
    frames: dict[str, tuple[str, ...]] = {}
    labels: dict[str, dict[str, str]] = defaultdict(dict)
    for r in rows:
        k = clip_key(r)
        if k not in frames:
            order.append(k)
            frames[k] = tuple(r["frames"])
        labels[k][r["question_type"]] = r["short_answer"]
    return order, frames, dict(labels)


def pixel_features(clip: np.ndarray, thumb: int = 8) -> np.ndarray:
    """Raw pixel statistics of one clip (T, H, W, 3) uint8: per-frame RGB mean and std, per-frame
    `thumb` x `thumb` RGB thumbnails (area means) and thumbnail differences between consecutive frames."""
    x = clip.astype(np.float32) / 255.0
    t, h, w, c = x.shape
    stats = np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1).ravel()
    th = x[:, : h // thumb * thumb, : w // thumb * thumb].reshape(t, thumb, h // thumb, thumb, w // thumb, c).mean(axis=(2, 4))
    diffs = np.diff(th, axis=0)
    return np.concatenate([stats, th.ravel(), diffs.ravel()]).astype(np.float32)


def colour_texture_features(clip: np.ndarray, bins: int = 6) -> np.ndarray:
    """Richer pixel statistics of one clip: joint RGB histogram (`bins`^3, frames pooled) and
    horizontal/vertical gradient-energy histograms (texture: folds, pit patterns, borders)."""
    x = clip.astype(np.float32) / 255.0
    q = np.minimum((x * bins).astype(np.int64), bins - 1)
    idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    lit = x.sum(-1) > 0.05  # inside the circular view
    hist = np.bincount(idx[lit].ravel(), minlength=bins**3).astype(np.float32)
    hist /= max(hist.sum(), 1.0)
    g = x.mean(-1)
    gx, gy = np.abs(np.diff(g, axis=2))[:, :-1, :], np.abs(np.diff(g, axis=1))[:, :, :-1]
    edges = np.array([0, 0.01, 0.02, 0.04, 0.08, 0.16, 1.0])
    tex = np.concatenate([np.histogram(gx, edges)[0], np.histogram(gy, edges)[0]]).astype(np.float32)
    tex /= max(tex.sum(), 1.0)
    return np.concatenate([np.sqrt(hist), tex])


@torch.no_grad()
def tower_features(model, processor, clips: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """Pooled features of the vision tower (after the patch merger: the tokens the language model is given)
    per clip, `pool_tokens` of each clip's (t, h/2, w/2) token grid."""
    return np.stack([pool_tokens(torch.from_numpy(g)).numpy() for g in tower_tokens(model, processor, clips, batch_size)])


def pool_tokens(grid: torch.Tensor) -> torch.Tensor:
    """One clip's tokens (t, h, w, d) -> its probe vector: the mean and the per-channel max over all tokens,
    per temporal step and per screen quadrant (motion and position). The max keeps what one or two tokens
    hold (a small lesion), which a mean over the whole grid dilutes."""
    t, h, w, _ = grid.shape
    regions = [grid] + [grid[k : k + 1] for k in range(t)] + [
        grid[:, : h // 2, : w // 2], grid[:, : h // 2, w // 2 :], grid[:, h // 2 :, : w // 2], grid[:, h // 2 :, w // 2 :]]
    return torch.cat([r.mean(dim=(0, 1, 2)) for r in regions] + [r.amax(dim=(0, 1, 2)) for r in regions])


# ---- linear probe ---------------------------------------------------------------------------------


def fit_probe(x_train: np.ndarray, y_train: Sequence[str], weight_decay: float = 1e-3, steps: int = 300,
              balanced: bool = True, seed: int = 0):
    """Multinomial logistic regression (standardised inputs, L2, LBFGS); class-balanced loss weights
    by default. Returns a predict(x) -> list[str] function."""
    classes = sorted(set(y_train))
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x = torch.tensor((x_train - mu) / sd, dtype=torch.float32)
    y = torch.tensor([classes.index(v) for v in y_train])
    counts = torch.bincount(y, minlength=len(classes)).float()
    weight = (counts.sum() / (len(classes) * counts.clamp(min=1))) if balanced else None
    torch.manual_seed(seed)
    lin = torch.nn.Linear(x.shape[1], len(classes))
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)

    def closure():
        opt.zero_grad()
        loss = loss_fn(lin(x), y) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)

    def predict(x_new: np.ndarray) -> list[str]:
        with torch.no_grad():
            logits = lin(torch.tensor((x_new - mu) / sd, dtype=torch.float32))
        return [classes[i] for i in logits.argmax(-1).tolist()]

    return predict


def probe_table(features: dict[str, dict[str, np.ndarray]], labels: dict[str, dict[str, str]],
                train_clips: Sequence[str], eval_clips: Sequence[str], weight_decay: float = 1e-3,
                min_per_class: int = 2) -> pd.DataFrame:
    """Balanced accuracy of a linear probe per (question type, feature set) on `eval_clips`.

    `features`: name -> {clip: vector}. Types whose eval labels have one class, or whose training
    labels have a class with fewer than `min_per_class` clips only, are skipped (NaN).
    """
    rows = {}
    for qtype in QUESTION_TYPES:
        tr = [c for c in train_clips if qtype in labels.get(c, {})]
        ev = [c for c in eval_clips if qtype in labels.get(c, {})]
        ytr = [labels[c][qtype] for c in tr]
        yev = [labels[c][qtype] for c in ev]
        row = {"train_clips": len(tr), "eval_clips": len(ev), "classes": len(set(yev)),
               "chance": 1.0 / max(1, len(set(yev)))}
        ok = len(set(yev)) > 1 and len(set(ytr)) > 1
        for name, feats in features.items():
            if not ok:
                row[name] = float("nan")
                continue
            keep = [i for i, c in enumerate(tr) if Counter(ytr)[ytr[i]] >= min_per_class]
            if len({ytr[i] for i in keep}) < 2:
                row[name] = float("nan")
                continue
            predict = fit_probe(np.stack([feats[tr[i]] for i in keep]), [ytr[i] for i in keep], weight_decay)
            row[name] = balanced_accuracy(predict(np.stack([feats[c] for c in ev])), yev, qtype)
        rows[qtype] = row
    return pd.DataFrame.from_dict(rows, orient="index")


# ---- the check, as notebook 04 runs it ---------------------------------------------------------------


RANDOM_TOWER_SEED = 1_000_003  # not a run's seed: the control must not be the model's own frozen tower again


def random_tower_like(model, seed: int = RANDOM_TOWER_SEED):
    """A vision tower of the same architecture with fresh (untrained) weights, drawn from another seed than the
    model's (the embedded model's tower is frozen at its initialisation: the same seed would rebuild it)."""
    inner = model.model if hasattr(model, "model") else model
    torch.manual_seed(seed)
    tower = type(inner.visual)._from_config(inner.visual.config)
    return type("Towered", (), {"visual": tower.to(inner.visual.dtype).eval()})()


def probe_features(ds, model, processor, clips: Sequence[str], frames: dict[str, tuple[str, ...]],
                   frame_size: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per clip: raw pixel statistics, colour/texture statistics, a random-init tower's and the trained
    tower's pooled features (one vector per clip and feature set)."""
    from .data import load_frames

    videos = [load_frames([ds.root / f for f in frames[c]], size=frame_size) for c in clips]
    return {
        "pixels": {c: pixel_features(v) for c, v in zip(clips, videos)},
        "colour_texture": {c: colour_texture_features(v) for c, v in zip(clips, videos)},
        "random_tower": dict(zip(clips, tower_features(random_tower_like(model), processor, videos))),
        "model_tower": dict(zip(clips, tower_features(model, processor, videos))),
    }


def sight_check(splits: dict, model, processor, predictions: pd.DataFrame, system: str = "text_finetuned",
                split: str = "heldout_video", frame_size: int | None = None, ranking: pd.DataFrame | None = None) -> dict:
    """Where sight is lost: per question type, the spread of `system`'s answers on `split`, and linear probes
    (training clips -> held-out-video clips) on pixels, on a random-init tower and on the model's tower;
    with `ranking` (`ranking_table` of the same model and rows), its own ranking of the answers too."""
    train_rows = splits["train"].rows
    test_rows = [r for r in splits["test"].rows if r.get("group") == split]
    order_tr, frames_tr, labels_tr = clip_labels(train_rows)
    order_te, frames_te, labels_te = clip_labels(test_rows)
    features = {name: {**a, **b} for (name, a), b in zip(
        probe_features(splits["train"], model, processor, order_tr, frames_tr, frame_size).items(),
        probe_features(splits["test"], model, processor, order_te, frames_te, frame_size).values())}
    probes = probe_table(features, {**labels_tr, **labels_te}, order_tr, order_te)
    spread = prediction_distribution(predictions[(predictions.system == system) & (predictions.split == split)])
    table = probes.join(spread[["distinct_predictions", "constant", "predicted", "truth"]], how="left")
    if ranking is not None:
        table = table.join(ranking, how="left")
    table.index.name = "question_type"
    return {"system": system, "split": split, "train_clips": len(order_tr), "eval_clips": len(order_te), "table": table}


# ---- local sight: what single tokens hold -----------------------------------------------------------


@torch.no_grad()
def tower_tokens(model, processor, clips: Sequence[np.ndarray], batch_size: int = 16) -> list[np.ndarray]:
    """Each clip's merged tokens as a (t, h, w, d) float32 array (what `tower_features` pools), in batches of
    `batch_size` clips (`vision_pretrain.token_grids`, the tower's one reading of a clip)."""
    from .vision_pretrain import token_grids

    visual = (model.model if hasattr(model, "model") else model).visual
    return [g.float().numpy() for i in range(0, len(clips), batch_size)
            for g in token_grids(visual, processor, list(clips[i : i + batch_size]))]


def token_pixel_features(clip: np.ndarray, token: int = 28, frames: int = 2) -> np.ndarray:
    """Colour statistics of each token's pixels (RGB mean and std over its `frames` x `token` x `token` pixels):
    (t, h, w, 6), the pixel baseline of the local probe."""
    t, s, _, c = clip.shape
    x = clip.astype(np.float32).reshape(t // frames, frames, s // token, token, s // token, token, c) / 255.0
    return np.concatenate([x.mean(axis=(1, 3, 5)), x.std(axis=(1, 3, 5))], axis=-1)


def local_probe_table(features: dict[str, dict[str, np.ndarray]], seen: dict[str, np.ndarray], masks: Sequence[str],
                      train_clips: Sequence[str], eval_clips: Sequence[str], max_tokens: int = 20000,
                      seed: int = 0) -> pd.DataFrame:
    """Per region mask, the balanced accuracy of a linear probe that tells from one token whether the mask is seen in
    it (training clips' tokens -> `eval_clips`' tokens), per feature set. `features`: name -> {clip: (t, h, w, d)};
    `seen`: clip -> (t, h, w, masks) 0/1. At most `max_tokens` training tokens (a seeded draw)."""
    rng = np.random.default_rng(seed)
    rows = {}
    for m, name in enumerate(masks):
        y_tr = np.concatenate([seen[c][..., m].ravel() for c in train_clips])
        y_ev = np.concatenate([seen[c][..., m].ravel() for c in eval_clips])
        row = {"train_tokens_seen": int(y_tr.sum()), "eval_tokens_seen": int(y_ev.sum()), "chance": 0.5}
        keep = rng.permutation(len(y_tr))[:max_tokens]
        for feat_name, feats in features.items():
            if len(set(y_tr[keep].tolist())) < 2 or len(set(y_ev.tolist())) < 2:
                row[feat_name] = float("nan")
                continue
            x_tr = np.concatenate([feats[c].reshape(-1, feats[c].shape[-1]) for c in train_clips])[keep]
            x_ev = np.concatenate([feats[c].reshape(-1, feats[c].shape[-1]) for c in eval_clips])
            labels = np.array(["no", "yes"])
            predict = fit_probe(x_tr, labels[y_tr[keep].astype(int)].tolist())
            pred = np.array(predict(x_ev)) == "yes"
            truth = y_ev.astype(bool)
            row[feat_name] = float((pred[truth].mean() + (~pred[~truth]).mean()) / 2)
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "region"
    return table


def local_sight_check(splits: dict, model, processor, data_dir, split: str = "test", group: str = "heldout_video",
                      frame_size: int | None = None) -> pd.DataFrame | None:
    """Local probes (`local_probe_table`) for the model's tower, a random tower (another seed) and the tokens' colour
    statistics, training clips -> the clips of `split`'s `group` rows (the dev-test; val for recipe choice), on the
    data step's region masks; None without region masks."""
    from .data import DataError, load_frames, read_regions
    from .vision_pretrain import token_shares, SEEN

    try:
        info, regions = read_regions(data_dir)
    except DataError:
        return None
    order_tr, frames_tr, _ = clip_labels(splits["train"].rows)
    order_te, frames_te, _ = clip_labels([r for r in splits[split].rows if r.get("group") == group])
    clips = {c: load_frames([ds.root / f for f in frames[c]], size=frame_size)
             for ds, order, frames in ((splits["train"], order_tr, frames_tr), (splits[split], order_te, frames_te))
             for c in order}
    names = list(clips)
    towers = {"random_tower": random_tower_like(model), "model_tower": model}
    features = {name: dict(zip(names, tower_tokens(m, processor, [clips[c] for c in names]))) for name, m in towers.items()}
    features["token_colour"] = {c: token_pixel_features(v) for c, v in clips.items()}
    seen = {c: (token_shares(regions[c]) > SEEN).astype(np.float32) for c in names}
    return local_probe_table(features, seen, info["masks"], order_tr, order_te)


PIXEL_MARGIN = 0.05


def not_in_the_pixels(table: pd.DataFrame) -> list[str]:
    """Question types whose answer neither pixel probe (raw statistics, colour-texture) reads better than chance +
    `PIXEL_MARGIN` on the probe's eval clips: at this frame size the rendering does not show it to a linear reader."""
    best = table[[c for c in ("pixels", "colour_texture") if c in table]].max(axis=1)
    return sorted(t for t, b in best.items() if not np.isnan(b) and b <= table.loc[t, "chance"] + PIXEL_MARGIN)


def sight_metrics(check: dict) -> dict:
    """JSON-ready: one entry per question type (probe balanced accuracies, chance, the system's answer spread)."""
    table = check["table"]
    per_type = {t: {k: (None if isinstance(v, float) and np.isnan(v) else (v.item() if hasattr(v, "item") else v))
                    for k, v in row.items()} for t, row in table.iterrows()}
    probed = table[["pixels", "colour_texture", "random_tower", "model_tower"]]
    ranked = table[[c for c in ("ranking_auroc", "likelihood_balanced", "prior_divided_balanced") if c in table]]
    return {k: check[k] for k in ("system", "split", "train_clips", "eval_clips")} | {
        "per_type": per_type,
        "mean_probe": {c: (None if np.isnan(v) else float(v)) for c, v in probed.mean().items()},
        # over the types whose answers vary on the split (the headline's types)
        "mean_ranking": {c: (None if np.isnan(v) else float(v)) for c, v in ranked.mean().items()},
        "constant_types": int(table["constant"].fillna(False).astype(bool).sum()),
        # types no pixel probe reads above chance (+5 points): not answerable from these frames, whatever the tower
        "not_in_the_pixels": not_in_the_pixels(table),
    } | ({"local": {r: {k: (None if isinstance(v, float) and np.isnan(v) else (v.item() if hasattr(v, "item") else v))
                        for k, v in row.items()} for r, row in check["local"].iterrows()}}
         if check.get("local") is not None else {})


def plot_sight(check: dict):
    """Probe balanced accuracy per type (pixels, random tower, the model's tower) against chance, with the
    types the system answers with one constant string marked."""
    import matplotlib.pyplot as plt

    table = check["table"]
    cols = [c for c in ("pixels", "colour_texture", "random_tower", "model_tower") if c in table]
    fig, ax = plt.subplots(figsize=(13, 4.2))
    (table[cols] * 100).plot.bar(ax=ax, width=0.8)
    ax.scatter(np.arange(len(table)), table["chance"] * 100, marker="_", s=300, color="black", zorder=3, label="chance")
    if "ranking_auroc" in table:
        ax.scatter(np.arange(len(table)), table["ranking_auroc"] * 100, marker="D", s=22, color="black", zorder=4,
                   label=f"{check['system']}'s answer ranking: AUROC (chance 50)")
    constant = table["constant"].fillna(False).astype(bool).to_numpy()
    for i in np.flatnonzero(constant):
        ax.annotate("const", (i, 101), ha="center", fontsize=7, color="tab:red")
    ax.set(ylim=(0, 110), ylabel="probe balanced accuracy (%)", xlabel="",
           title=f"Sight check: linear probes, training clips -> {check['split']} clips "
                 f"(red 'const': {check['system']} gives one answer)")
    ax.tick_params(axis="x", rotation=75, labelsize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside the axes: bars reach 100
    fig.tight_layout()
    return fig


def plot_local_sight(local: pd.DataFrame):
    """Per region, the local probes' balanced accuracy (is it seen in this token?) per feature set, against chance."""
    import matplotlib.pyplot as plt

    cols = [c for c in ("token_colour", "random_tower", "model_tower") if c in local]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    (local[cols] * 100).plot.bar(ax=ax, width=0.8)
    ax.axhline(50, color="black", lw=1, ls="--", label="chance")
    ax.set(ylim=(0, 105), ylabel="probe balanced accuracy (%)", xlabel="",
           title="Local sight: is the region seen in this token? (training clips -> held-out-video clips)")
    ax.tick_params(axis="x", rotation=0)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig
