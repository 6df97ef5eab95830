"""Dense tag embeddings from co-occurrence: PPMI + truncated SVD.

- `ppmi(cooc, alpha)`: positive pointwise mutual information of a tag × tag count matrix, with
  context-distribution smoothing (Levy, Goldberg & Dagan 2015: counts of contexts raised to
  `alpha` = 0.75). The diagonal is ignored.
- `tag_embeddings(cooc, dim, rng, min_count)`: rows are unit-length vectors `U·√Σ` of a seeded
  randomized SVD of the PPMI matrix; tags seen on fewer than `min_count` items get zero rows.
  The co-occurrence can come from item tag sets, from users' histories (user × tag counts turned
  into tag × tag), or a weighted sum of both. These vectors are what pgvector stores.
- `related_tags(emb, tags, tag, k)`: the k nearest tags by cosine (exact; pgvector's HNSW index
  answers the same query in the database).
- `heldout_cooccurrence_auc(cooc, dim, rng)`: hides 10 % of the co-occurring tag pairs, learns
  embeddings from the rest and reports the AUC of cosine for hidden pairs against random pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata
from sklearn.utils.extmath import randomized_svd

from tagloop.tools.errors import InvalidInput


def ppmi(cooc: sp.spmatrix, alpha: float = 0.75) -> sp.csr_matrix:
    """PPMI(s, t) = max(0, log(C[s,t]·Σ_c / (C[s,·]·C_α[t]/ΣC_α·Σ_c))), off-diagonal only."""
    c = sp.csr_matrix(cooc, dtype=np.float64, copy=True)
    c.setdiag(0.0)
    c.eliminate_zeros()
    row = np.asarray(c.sum(axis=1)).ravel()
    total = row.sum()
    if total <= 0:
        return sp.csr_matrix(c.shape)
    ctx = np.power(np.asarray(c.sum(axis=0)).ravel(), alpha)
    ctx_p = ctx / ctx.sum()
    coo = c.tocoo()
    with np.errstate(divide="ignore"):
        values = np.log(coo.data * 1.0 / (row[coo.row] * ctx_p[coo.col]))
    keep = values > 0
    return sp.csr_matrix((values[keep], (coo.row[keep], coo.col[keep])), shape=c.shape)


def tag_embeddings(
    cooc: sp.spmatrix, dim: int, rng: np.random.Generator, min_count: float = 2.0
) -> np.ndarray:
    """Unit vectors (n_tags × dim) from the PPMI + SVD of `cooc`; rare tags get zero rows."""
    n = cooc.shape[0]
    if n == 0:
        raise InvalidInput("cannot embed an empty tag vocabulary")
    if dim < 1:
        raise InvalidInput(f"embedding dim must be ≥ 1, got {dim}")
    counts = np.asarray(sp.csr_matrix(cooc).diagonal()).ravel()
    keep = np.flatnonzero(counts >= min_count)
    out = np.zeros((n, dim), dtype=np.float64)
    if keep.size < 2:
        return out
    sub = ppmi(sp.csr_matrix(cooc)[keep][:, keep])
    k = min(dim, keep.size - 1)
    u, s, _ = randomized_svd(sub, n_components=k, n_iter=5, random_state=int(rng.integers(2**31 - 1)))
    vectors = u * np.sqrt(s)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out[keep, :k] = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return out


def related_tags(emb: np.ndarray, tags: Sequence[str], tag: str, k: int = 10) -> list[tuple[str, float]]:
    """The k tags closest to `tag` by cosine, best first (the tag itself left out)."""
    try:
        j = list(tags).index(tag)
    except ValueError as err:
        raise InvalidInput(f"unknown tag {tag!r}") from err
    sims = emb @ emb[j]
    sims[j] = -np.inf
    order = np.argsort(-sims, kind="stable")[:k]
    return [(tags[i], float(sims[i])) for i in order if np.isfinite(sims[i]) and sims[i] > 0]


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half."""
    if positive.size == 0 or negative.size == 0:
        raise InvalidInput("AUC needs at least one positive and one negative score")
    ranks = rankdata(np.concatenate([positive, negative]))
    n_pos, n_neg = positive.size, negative.size
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def heldout_cooccurrence_auc(
    cooc: sp.spmatrix, dim: int, rng: np.random.Generator, hide: float = 0.1, min_count: float = 5.0
) -> tuple[float, int]:
    """AUC of embedding cosine for hidden co-occurring pairs vs uniformly random tag pairs.

    Pairs are drawn among tags with ≥ min_count items; hidden pairs are removed (both ways) before
    the embeddings are learned. Returns (auc, number of hidden pairs). Random scores give 0.5.
    """
    c = sp.csr_matrix(cooc, dtype=np.float64)
    counts = c.diagonal()
    frequent = counts >= min_count
    upper = sp.triu(c, k=1).tocoo()
    mask = frequent[upper.row] & frequent[upper.col]
    rows, cols = upper.row[mask], upper.col[mask]
    hidden = rng.random(rows.size) < hide
    hr, hc = rows[hidden], cols[hidden]
    drop = sp.csr_matrix((np.r_[c[hr, hc].A1, c[hr, hc].A1], (np.r_[hr, hc], np.r_[hc, hr])), shape=c.shape)
    emb = tag_embeddings(c - drop, dim, rng, min_count=min_count)
    pool = np.flatnonzero(frequent)
    ra, rb = rng.choice(pool, size=(2, hr.size))
    distinct = ra != rb
    pos = np.einsum("ij,ij->i", emb[hr], emb[hc])
    neg = np.einsum("ij,ij->i", emb[ra[distinct]], emb[rb[distinct]])
    return auc(pos, neg), int(hr.size)
