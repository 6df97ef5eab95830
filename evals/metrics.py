"""Top-k ranking metrics for implicit-feedback recommenders (pure numpy, binary relevance).

Every function takes `ranked`, an (n_users × ≥k) int array of item indices in rank order (-1 pads
lists that are shorter than k), and `relevant`, one int array of held-out item indices per user.
Per-user metrics are averaged over users; `coverage_at_k` is a catalogue-level share.

Definitions (binary relevance, as in SPEC §6):
- ndcg@k   = Σ_{r≤k, ranked[r] relevant} 1/log2(r+1)  /  Σ_{r≤min(k, |rel|)} 1/log2(r+1)
- recall@k = |top-k ∩ rel| / |rel|   (items the model can never rank still count in |rel|)
- hit@k    = 1 if top-k ∩ rel ≠ ∅ else 0
- coverage@k = |∪_u top-k(u)| / n_items  (n_items = the catalogue size the caller names)
Users with an empty `relevant` set are skipped by the per-user metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tagloop.tools.errors import InvalidInput


def _check(ranked: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> None:
    if k < 1:
        raise InvalidInput(f"k must be >= 1, got {k}")
    if ranked.ndim != 2:
        raise InvalidInput(f"ranked must be a 2-d array (users × ranks), got shape {ranked.shape}")
    if ranked.shape[0] != len(relevant):
        raise InvalidInput(f"ranked has {ranked.shape[0]} users but relevant has {len(relevant)}")


def _hits(ranked: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (n_users × k) hit matrix and the size of each user's relevant set."""
    top = ranked[:, :k]
    hits = np.zeros(top.shape, dtype=bool)
    sizes = np.zeros(len(relevant), dtype=np.int64)
    for u, rel in enumerate(relevant):
        rel = np.unique(np.asarray(rel, dtype=np.int64))
        sizes[u] = rel.size
        if rel.size:
            hits[u] = np.isin(top[u], rel) & (top[u] >= 0)
    return hits, sizes


def per_user_ndcg(ranked: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> np.ndarray:
    """NDCG@k of every user with at least one relevant item (array in user order)."""
    _check(ranked, relevant, k)
    hits, sizes = _hits(ranked, relevant, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits[:, : hits.shape[1]] @ discounts[: hits.shape[1]]
    ideal_cum = np.concatenate([[0.0], np.cumsum(discounts)])
    idcg = ideal_cum[np.minimum(sizes, k)]
    keep = sizes > 0
    return np.asarray(dcg[keep] / idcg[keep], dtype=np.float64)


def ndcg_at_k(ranked: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """Mean NDCG@k over users with relevant items (0.0 when there are none)."""
    scores = per_user_ndcg(ranked, relevant, k)
    return float(scores.mean()) if scores.size else 0.0


def recall_at_k(ranked: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """Mean share of each user's relevant items found in the top k."""
    _check(ranked, relevant, k)
    hits, sizes = _hits(ranked, relevant, k)
    keep = sizes > 0
    return float((hits.sum(axis=1)[keep] / sizes[keep]).mean()) if keep.any() else 0.0


def hit_at_k(ranked: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """Share of users with at least one relevant item in the top k."""
    _check(ranked, relevant, k)
    hits, sizes = _hits(ranked, relevant, k)
    keep = sizes > 0
    any_hit = np.asarray(hits.any(axis=1), dtype=bool)
    return float(any_hit[keep].mean()) if keep.any() else 0.0


def coverage_at_k(ranked: np.ndarray, k: int, n_items: int) -> float:
    """Share of the catalogue (n_items) that appears in at least one user's top k."""
    if n_items < 1:
        raise InvalidInput(f"n_items must be >= 1, got {n_items}")
    if k < 1:
        raise InvalidInput(f"k must be >= 1, got {k}")
    top = np.asarray(ranked)[:, :k]
    shown = np.unique(top[top >= 0])
    return float(shown.size / n_items)


def ranking_report(
    ranked: np.ndarray, relevant: Sequence[np.ndarray], n_items: int, k: int = 10, recall_k: int = 20
) -> dict[str, float]:
    """The SPEC §6 metric block: ndcg@k, recall@recall_k, hit@k, coverage@k — every one over the
    users with relevant items (the users scored; a user with none counts in no metric)."""
    _check(ranked, relevant, k)
    scored = np.array([np.asarray(rel).size > 0 for rel in relevant], dtype=bool)
    return {
        f"ndcg@{k}": ndcg_at_k(ranked, relevant, k),
        f"recall@{recall_k}": recall_at_k(ranked, relevant, recall_k),
        f"hit@{k}": hit_at_k(ranked, relevant, k),
        f"coverage@{k}": coverage_at_k(np.asarray(ranked)[scored], k, n_items),
    }
