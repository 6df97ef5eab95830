"""Diversity (MMR over tag vectors) and calibration (slate tag mix close to the user's), one knob each.

Both are greedy: the slate is built slot by slot and each candidate's utility depends on what is
already placed. Their incremental states are shared with `policies.slate.choose_slate`.

- MMR (Carbonell & Goldstein 1998): `(1 - λ) · rel_j - λ · max_{i ∈ S} cos(tags_j, tags_i)`;
  cosine over non-negative tag weights, so the penalty is in [0, 1]. λ = 0 is relevance order.
- Calibration (Steck 2018, "Calibrated recommendations"): p = the user's tag mix (normalised
  `user_tag_mix`), q(S) = mean over slate items of each item's tag distribution (its tag weights
  normalised to sum 1), q̃ = (1 - α) q + α p, and the utility `(1 - λ) · rel_j - λ · KL(p ‖ q̃(S ∪ {j}))`.
  KL only needs the tags in the support of p, so the state keeps an (n × |supp p|) matrix.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import scipy.sparse as sp

from tagloop.policies.fairness import normalized_relevance
from tagloop.tools.errors import InvalidInput

TagMatrix: TypeAlias = np.ndarray | sp.spmatrix | sp.sparray


def _csr(item_tags: TagMatrix, n: int) -> sp.csr_array:
    m = sp.csr_array(item_tags, dtype=np.float64)
    if m.shape[0] != n:
        raise InvalidInput(f"item_tags has {m.shape[0]} rows but there are {n} candidates")
    if m.nnz and (m.data.min() < 0 or not np.all(np.isfinite(m.data))):
        raise InvalidInput("tag weights must be finite and non-negative")
    return m


def tag_similarity(item_tags: TagMatrix) -> np.ndarray:
    """Dense (n × n) cosine similarity of the items' tag vectors (0 for items without tags)."""
    m = sp.csr_array(item_tags, dtype=np.float64)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    unit = sp.diags_array(inv) @ m
    return np.asarray((unit @ unit.T).toarray())


class MMRState:
    """Max cosine similarity of every candidate to the items placed so far.

    Up to `DENSE_LIMIT` candidates a placed item's similarity row is one matrix-vector product with
    the unit-norm rows: dense rows for a dense input or a sparse one of at most `DENSE_CELLS`
    cells, else sparse rows over the used tags only — items with dozens of tags each make dense
    rows thousands of columns wide.
    Above it, rows are computed only for placed items from a column-sorted copy of the entries
    (cost ∝ entries sharing a tag with the placed item).
    """

    DENSE_LIMIT = 1000
    DENSE_CELLS = 20_000

    def __init__(self, item_tags: TagMatrix) -> None:
        self.dense: np.ndarray | None = None
        self.unit: sp.csr_array | None = None
        if isinstance(item_tags, UnitRowsArray) and item_tags.shape[0] <= self.DENSE_LIMIT:
            self.dense = item_tags.view(np.ndarray)  # unit rows already: used as they are
            self.max_sim = np.zeros(item_tags.shape[0], dtype=np.float64)
            return
        if isinstance(item_tags, np.ndarray):
            m = np.asarray(item_tags, dtype=np.float64)
            n = m.shape[0]
            self.max_sim = np.zeros(n, dtype=np.float64)
            if n <= self.DENSE_LIMIT:
                self.dense = unit_length_rows(m)
                return
            item_tags = sp.csr_array(m)
        m = sp.csr_array(item_tags, dtype=np.float64)
        m.sum_duplicates()
        n = m.shape[0]
        self.max_sim = np.zeros(n, dtype=np.float64)
        rows = np.repeat(np.arange(n), np.diff(m.indptr))
        sq = np.bincount(rows, weights=m.data * m.data, minlength=n)
        inv = np.divide(1.0, np.sqrt(sq), out=np.zeros(n), where=sq > 0)
        if n <= self.DENSE_LIMIT:
            cols, width = m.indices, m.shape[1]
            if width > 4 * m.nnz + 64:  # a wide tag space (e.g. all tag ids): only the used columns
                used, cols = np.unique(m.indices, return_inverse=True)
                width = max(used.size, 1)
            unit = sp.csr_array((m.data * inv[rows], cols, m.indptr), shape=(n, width))
            if n * width <= self.DENSE_CELLS:  # narrow: dense rows beat sparse call overheads
                self.dense = unit.toarray()
            else:
                self.unit = unit
            return
        self.data = m.data * inv[rows]
        self.cols = m.indices
        self.indptr = m.indptr
        order = np.argsort(self.cols, kind="stable")
        self.by_col = self.cols[order]
        self.by_col_rows = rows[order]
        self.by_col_data = self.data[order]

    def penalty(self) -> np.ndarray:
        return self.max_sim

    def similarity_row(self, j: int) -> np.ndarray:
        """Cosine similarity of item j to every candidate."""
        if self.dense is not None:  # over j's tags only: the same bits however wide the rows are
            row = self.dense[j]
            nz = np.flatnonzero(row)
            return self.dense[:, nz] @ row[nz]
        if self.unit is not None:
            u = self.unit
            lo, hi = u.indptr[j], u.indptr[j + 1]
            row = np.zeros(u.shape[1])
            row[u.indices[lo:hi]] = u.data[lo:hi]
            return np.asarray(u @ row)
        lo, hi = self.indptr[j], self.indptr[j + 1]
        starts = np.searchsorted(self.by_col, self.cols[lo:hi], side="left")
        lens = np.searchsorted(self.by_col, self.cols[lo:hi], side="right") - starts
        offsets = np.cumsum(lens) - lens
        idx = np.repeat(starts - offsets, lens) + np.arange(int(lens.sum()))
        weights = self.by_col_data[idx] * np.repeat(self.data[lo:hi], lens)
        return np.bincount(self.by_col_rows[idx], weights=weights, minlength=self.max_sim.size)

    def add(self, j: int) -> None:
        np.maximum(self.max_sim, self.similarity_row(j), out=self.max_sim)


class UnitRowsArray(np.ndarray):
    """A dense tag matrix whose rows are unit length already (or zero): `MMRState` uses it as it
    is instead of scaling it again."""


def unit_length_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero).

    A row's squared length is summed over its non-zero entries only, left to right (as the sparse
    path of `MMRState` does), so it does not depend on which other columns the matrix has: the agent
    builds rows over a whole chunk's tags, an offline replay over one decision's
    (evals/ope/logs.py), and both must get the same bits, or a tie between two candidates could
    break differently and the replayed propensities would not be the logged ones."""
    rows, cols = np.nonzero(m)
    vals = m[rows, cols]
    sq = np.bincount(rows, weights=vals * vals, minlength=m.shape[0])
    norms = np.sqrt(sq)
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return m * inv[:, None]


def unit_length_entries(lens: np.ndarray, data: np.ndarray) -> np.ndarray:
    """`data` — rows of `lens[i]` non-zero entries each, row after row, each row's in column order —
    scaled to unit length per row with the same bits `unit_length_rows` gives the dense rows (the
    same squares, summed in the same order), without building or scanning a dense matrix."""
    owner = np.repeat(np.arange(lens.size), lens)
    sq = np.bincount(owner, weights=data * data, minlength=lens.size)
    norms = np.sqrt(sq)
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return data * inv[owner]


class CalibrationState:
    """KL(p ‖ q̃(S ∪ {j})) for every candidate j given the placed set S."""

    def __init__(self, item_tags: TagMatrix, user_tag_mix: np.ndarray, alpha: float) -> None:
        mix = np.asarray(user_tag_mix, dtype=np.float64).ravel()
        m = sp.csr_array(item_tags, dtype=np.float64)
        if mix.shape[0] != m.shape[1]:
            raise InvalidInput(f"user_tag_mix has {mix.shape[0]} tags but item_tags has {m.shape[1]}")
        if np.any(mix < 0) or not np.all(np.isfinite(mix)) or mix.sum() <= 0:
            raise InvalidInput("user_tag_mix must be non-negative, finite and not all zero")
        support = np.flatnonzero(mix)
        self.p = mix[support] / mix.sum()
        rows = np.asarray(m.sum(axis=1)).ravel()
        inv = np.divide(1.0, rows, out=np.zeros_like(rows), where=rows > 0)
        self.dists = np.asarray((sp.diags_array(inv) @ m)[:, support].toarray())
        self.alpha = alpha
        self.acc = np.zeros_like(self.p)
        self.count = 0
        self._p_log_p = float(np.sum(self.p * np.log(self.p)))

    def penalty(self) -> np.ndarray:
        q = (self.acc + self.dists) / (self.count + 1)
        q_tilde = (1.0 - self.alpha) * q + self.alpha * self.p
        return self._p_log_p - np.log(q_tilde) @ self.p

    def kl(self) -> float:
        """KL of the slate placed so far (∞-free thanks to the α smoothing)."""
        q = self.acc / max(self.count, 1)
        q_tilde = (1.0 - self.alpha) * q + self.alpha * self.p
        return float(self._p_log_p - np.log(q_tilde) @ self.p)

    def add(self, j: int) -> None:
        self.acc += self.dists[j]
        self.count += 1


def _greedy(rel: np.ndarray, k: int, lam: float, state: MMRState | CalibrationState) -> np.ndarray:
    n = rel.shape[0]
    taken = np.zeros(n, dtype=bool)
    order: list[int] = []
    for _ in range(min(k, n)):
        u = (1.0 - lam) * rel - lam * state.penalty()
        u[taken] = -np.inf
        j = int(np.argmax(u))
        order.append(j)
        taken[j] = True
        state.add(j)
    return np.asarray(order, dtype=np.int64)


def _check(scores: np.ndarray, lam: float, what: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)):
        raise InvalidInput("scores must be a non-empty 1-D array of finite numbers")
    if not 0.0 <= lam <= 1.0:
        raise InvalidInput(f"{what} must be in [0, 1], got {lam}")
    return s


def mmr_rerank(scores: np.ndarray, item_tags: TagMatrix, k: int, lam: float) -> np.ndarray:
    """Greedy MMR slate of k indices; λ = 0 is relevance order, larger λ spreads tags."""
    s = _check(scores, lam, "mmr lambda")
    _csr(item_tags, s.size)
    return _greedy(normalized_relevance(s), k, lam, MMRState(item_tags))


def calibrated_rerank(
    scores: np.ndarray,
    item_tags: TagMatrix,
    user_tag_mix: np.ndarray,
    k: int,
    lam: float,
    alpha: float = 0.01,
) -> np.ndarray:
    """Greedy calibrated slate of k indices (Steck 2018); λ trades relevance for a smaller KL."""
    s = _check(scores, lam, "calibration lambda")
    m = _csr(item_tags, s.size)
    return _greedy(normalized_relevance(s), k, lam, CalibrationState(m, user_tag_mix, alpha))


def calibration_kl(
    actions: np.ndarray, item_tags: TagMatrix, user_tag_mix: np.ndarray, alpha: float = 0.01
) -> float:
    """KL(p ‖ q̃) of a given slate: how far its tag mix is from the user's."""
    state = CalibrationState(item_tags, user_tag_mix, alpha)
    for j in np.asarray(actions, dtype=np.int64):
        state.add(int(j))
    return state.kl()
