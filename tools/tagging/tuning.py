"""Held-out tag splits, ranking metrics, and blend-weight tuning without touching the test set.

- `hide_tags(known, frac, rng)`: for every item with ≥ 2 tags hide max(1, round(frac·n)) of them
  (seeded); items with one tag keep it. Returns the remaining `ItemTags` and item row → hidden tags.
  The bench uses it to split item_tags.csv; `tune_blend` uses it to carve a validation split
  from the known tags only.
- `precision_recall(ranked, held, p_k, r_k)`: mean precision@p_k and recall@r_k over items.
- `tune_blend(known, interactions, providers, rng)`: coordinate search over the blend weights,
  scored by recall@10 on the validation split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from tagloop.tools.tagging.matrices import ItemTags
from tagloop.tools.tagging.model import SIGNALS, BlendWeights, ModelParams, TagModel, top_k


def hide_tags(known: ItemTags, frac: float, rng: np.random.Generator) -> tuple[ItemTags, dict[int, set[str]]]:
    """Split each item's tags into (kept, hidden); see the module docstring for the rule."""
    m = sp.csr_matrix(known.matrix)
    keep = np.ones(m.nnz, dtype=bool)
    hidden: dict[int, set[str]] = {}
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        n = hi - lo
        if n < 2:
            continue
        n_hide = max(1, round(frac * n))
        pick = lo + rng.choice(n, size=n_hide, replace=False)
        keep[pick] = False
        hidden[i] = {known.tags[j] for j in m.indices[pick]}
    kept = sp.csr_matrix(m.copy())
    kept.data = np.where(keep, kept.data, 0.0)
    kept.eliminate_zeros()
    return ItemTags(matrix=kept, items=known.items, tags=known.tags), hidden


def precision_recall(
    ranked: Sequence[Sequence[str]], held: Sequence[set[str]], p_k: int = 5, r_k: int = 10
) -> tuple[float, float]:
    """Mean precision@p_k and recall@r_k; items with nothing held are skipped."""
    precisions: list[float] = []
    recalls: list[float] = []
    for tags, truth in zip(ranked, held, strict=True):
        if not truth:
            continue
        precisions.append(len(set(tags[:p_k]) & truth) / p_k)
        recalls.append(len(set(tags[:r_k]) & truth) / len(truth))
    if not recalls:
        return 0.0, 0.0
    return float(np.mean(precisions)), float(np.mean(recalls))


def tune_blend(
    known: ItemTags,
    interactions: sp.csr_matrix | None,
    providers: Sequence[str | None] | None,
    rng: np.random.Generator,
    params: ModelParams | None = None,
    sample: int = 1500,
    rounds: int = 2,
    progress: Callable[[str], None] | None = None,
) -> BlendWeights:
    """Blend weights maximising recall@10 on a validation split carved from `known` (seeded)."""
    train, hidden = hide_tags(known, 0.3, rng)
    rows = np.array(sorted(hidden), dtype=np.int64)
    if rows.size == 0:
        return BlendWeights()
    if rows.size > sample:
        rows = np.sort(rng.choice(rows, size=sample, replace=False))
    if progress:
        progress("fitting the validation model")
    model = TagModel(train, interactions, providers, rng, params)
    signals = model.signals(rows)
    tag_ix = {t: j for j, t in enumerate(model.tags)}
    truth = [{tag_ix[t] for t in hidden[int(r)] if t in tag_ix} for r in rows]
    n_truth = np.array([max(1, len(t)) for t in truth], dtype=np.float64)
    truth_mask = np.zeros((rows.size, len(model.tags)), dtype=bool)
    for b, cols in enumerate(truth):
        truth_mask[b, list(cols)] = True
    known_mask = model.binary[rows].toarray() > 0
    active = [name for name in SIGNALS if np.any(signals[name] > 0)]

    def score(weights: dict[str, float]) -> float:
        blended = sum((weights[n] * signals[n] for n in active), np.zeros(truth_mask.shape))
        blended[known_mask] = -np.inf
        best = top_k(blended, 10, prior=model.tag_freq)  # ties as `eval tagging` breaks them
        hits = np.take_along_axis(truth_mask, best, axis=1).sum(axis=1)
        return float(np.mean(hits / n_truth))

    weights = {name: (1.0 if name in active and name != "popular" else 0.0) for name in SIGNALS}
    best = score(weights)
    if progress:
        progress("searching blend weights")
    for _ in range(rounds):
        for name in active:
            for value in (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0):
                trial = {**weights, name: value}
                if sum(trial.values()) <= 0:
                    continue
                s = score(trial)
                if s > best + 1e-9:
                    best, weights = s, trial
    total = sum(weights.values())
    if total <= 0:  # only popularity had any signal on this validation split: nothing to tune
        return BlendWeights()
    return BlendWeights(**{name: weights[name] / total for name in SIGNALS})
