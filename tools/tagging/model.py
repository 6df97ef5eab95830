"""The tag-prediction model: which vocabulary tags an item is missing, from four signals.

`TagModel.fit(known, interactions, providers, rng)` learns from an item × tag matrix, a
user × item interaction matrix (same item order) and each item's provider. `signals(rows)`
returns, for a batch of item rows, one dense (rows × tags) array per signal, each in [0, 1]:
- `cooccurrence`: Σ_s w_s·C[s,t]/(C[s,s]+β) over the item's known tags s (w = log-weights summing
  to 1): a shrunk conditional probability P(t | s).
- `colisten`: the similarity-weighted share of the item's k most co-consumed neighbours (cosine
  over users, shrunk by co-count) that carry t; neighbours without tags are left out.
- `embedding`: cosine between the item's mean PPMI-SVD tag vector and t's vector (clipped at 0).
- `provider`: the share of the same provider's other items that carry t.
- `popular`: the tag's share of tagged items (a prior, identical for every row).
`blend(signals, weights)` mixes them linearly; tags the item already has score -inf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from tagloop.tools.errors import InvalidInput
from tagloop.tools.tagging.embeddings import tag_embeddings
from tagloop.tools.tagging.matrices import ItemTags, cooccurrence

SIGNALS = ("cooccurrence", "colisten", "embedding", "provider", "popular")


@dataclass(frozen=True)
class BlendWeights:
    cooccurrence: float = 0.45
    colisten: float = 0.45
    embedding: float = 0.05
    provider: float = 0.0  # auto-tagging scores provider evidence on its own (autotag.provider_evidence)
    popular: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class ModelParams:
    min_count: int = 2  # a tag must be on this many items to be predicted
    dim: int = 64  # embedding size
    neighbours: int = 50  # co-consumed items per item
    shrink_cooc: float = 5.0  # β in P(t|s)
    shrink_sim: float = 10.0  # similarity × co/(co+λ)


class TagModel:
    """Fitted state: tag columns, input weights, P(t|s), embeddings, neighbours, providers."""

    def __init__(
        self,
        known: ItemTags,
        interactions: sp.csr_matrix | None,
        providers: Sequence[str | None] | None,
        rng: np.random.Generator,
        params: ModelParams | None = None,
    ) -> None:
        self.params = params or ModelParams()
        p = self.params
        binary_all = known.binary()
        counts = np.asarray(binary_all.sum(axis=0)).ravel()
        cols = np.flatnonzero(counts >= p.min_count)
        if cols.size == 0:
            raise InvalidInput(f"no tag is on at least {p.min_count} items: too few known tags to learn from")
        self.items = known.items
        self.tags = [known.tags[j] for j in cols]
        raw = sp.csr_matrix(known.matrix[:, cols])
        self.binary = sp.csr_matrix(binary_all[:, cols])
        logw = raw.copy()
        logw.data = np.log1p(logw.data)
        self.weights = normalize(logw, norm="l1", axis=1)
        cooc = cooccurrence(self.binary)
        diag = cooc.diagonal()
        cond = sp.diags(1.0 / (diag + p.shrink_cooc)) @ cooc
        cond = sp.csr_matrix(cond)
        cond.setdiag(0.0)
        cond.eliminate_zeros()
        self.cond = cond
        self.tag_freq = diag / max(1, int((np.diff(self.binary.indptr) > 0).sum()))
        self.emb = tag_embeddings(cooc, p.dim, rng, min_count=max(2, p.min_count))
        self.users = self._user_matrix(interactions)
        self.provider_matrix = self._provider_matrix(providers)

    def _user_matrix(self, interactions: sp.csr_matrix | None) -> sp.csc_matrix | None:
        if interactions is None or interactions.nnz == 0:
            return None
        r = sp.csr_matrix(interactions, dtype=np.float64, copy=True)
        r.data = np.ones_like(r.data)
        return sp.csc_matrix(r)

    def _provider_matrix(self, providers: Sequence[str | None] | None) -> sp.csr_matrix | None:
        if providers is None:
            return None
        index: dict[str, int] = {}
        rows = [i for i, prov in enumerate(providers) if prov]
        cols = [index.setdefault(str(providers[i]), len(index)) for i in rows]
        if not rows:
            return None
        return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(providers), len(index)))

    def neighbours(self, rows: np.ndarray) -> sp.csr_matrix:
        """Row-normalised top-k co-consumption similarities to items that have tags (rows × items)."""
        n = len(self.items)
        if self.users is None:
            return sp.csr_matrix((rows.size, n))
        users = self.users
        co = sp.csr_matrix(users[:, rows].T @ users)  # co-counts
        pop = np.asarray(users.sum(axis=0)).ravel()
        tagged = np.diff(self.binary.indptr) > 0
        out_r: list[np.ndarray] = []
        out_c: list[np.ndarray] = []
        out_v: list[np.ndarray] = []
        k, lam = self.params.neighbours, self.params.shrink_sim
        for b, item in enumerate(rows):
            lo, hi = co.indptr[b], co.indptr[b + 1]
            idx, cnt = co.indices[lo:hi], co.data[lo:hi]
            ok = (idx != item) & tagged[idx]
            idx, cnt = idx[ok], cnt[ok]
            if idx.size == 0:
                continue
            sim = cnt / np.sqrt(pop[item] * pop[idx]) * (cnt / (cnt + lam))
            if idx.size > k:
                top = np.argpartition(-sim, k - 1)[:k]
                idx, sim = idx[top], sim[top]
            out_r.append(np.full(idx.size, b))
            out_c.append(idx)
            out_v.append(sim / sim.sum())
        if not out_r:
            return sp.csr_matrix((rows.size, n))
        return sp.csr_matrix(
            (np.concatenate(out_v), (np.concatenate(out_r), np.concatenate(out_c))), shape=(rows.size, n)
        )

    def _provider_signal(self, rows: np.ndarray) -> np.ndarray:
        n_tags = len(self.tags)
        if self.provider_matrix is None:
            return np.zeros((rows.size, n_tags))
        same = sp.lil_matrix(self.provider_matrix[rows] @ self.provider_matrix.T)
        for b, item in enumerate(rows):
            same[b, item] = 0.0
        same_csr = normalize(sp.csr_matrix(same), norm="l1", axis=1)
        return np.asarray((same_csr @ self.binary).todense())

    def signals(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """One dense (len(rows) × n_tags) array per signal in SIGNALS, values in [0, 1]."""
        w = self.weights[rows]
        cooc = np.asarray((w @ self.cond).todense())
        colisten = np.asarray((self.neighbours(rows) @ self.binary).todense())
        item_vec = normalize(np.asarray(w @ self.emb))
        embedding = np.clip(item_vec @ self.emb.T, 0.0, 1.0)
        popular = np.broadcast_to(self.tag_freq, (rows.size, len(self.tags)))
        return {
            "cooccurrence": cooc,
            "colisten": colisten,
            "embedding": embedding,
            "provider": self._provider_signal(rows),
            "popular": np.asarray(popular),
        }

    def blend(self, rows: np.ndarray, signals: dict[str, np.ndarray], weights: BlendWeights) -> np.ndarray:
        """The weighted mix of the signals with the items' known tags set to -inf."""
        wd = weights.as_dict()
        scores = sum((wd[name] * signals[name] for name in SIGNALS), np.zeros((rows.size, len(self.tags))))
        known = self.binary[rows].nonzero()
        scores[known] = -np.inf
        return scores


def top_k(scores: np.ndarray, k: int, prior: np.ndarray | None = None) -> np.ndarray:
    """Column indices of the k best scores per row, best first; ties go to the higher `prior`
    (one value per column, e.g. the tags' popularity), then to the lower column. An item without
    evidence scores 0 everywhere: without a prior its ranking was the columns' order in the file."""
    n = scores.shape[1]
    k = min(k, n)
    if k <= 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64)
    columns = np.arange(n) if prior is None else np.argsort(-np.asarray(prior), kind="stable")
    ranked = scores[:, columns]  # columns in tie-break order: a stable sort keeps it among ties
    kth = -np.partition(-ranked, k - 1, axis=1)[:, k - 1 : k]  # each row's k-th best score
    out = np.empty((scores.shape[0], k), dtype=np.int64)
    for b in range(scores.shape[0]):
        cand = np.flatnonzero(ranked[b] >= kth[b])  # every column tied with the k-th, in order
        best = cand[np.argsort(-ranked[b, cand], kind="stable")[:k]]
        out[b] = columns[best]
    return out
