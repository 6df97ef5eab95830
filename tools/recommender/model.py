"""The tagloop recommender: a tag-aware EASE blend in servable low-rank form (`fit`, `RecModel`).

Scores are one inner product, so Postgres can serve them with pgvector
(`order by item_vec <#> user_vec limit k`):

    score(u, i) = user_vec(u) · item_vec(i)
    item_vec(i) = [ V_cf[i] (d_cf)            | V_tag[i] (d_tag) | bias_scale · pop_i (1) ]
    user_vec(u) = [ c_u P_cf + a · p_u Q_cf   | γ · p_u P_tag    | 1 ]

- c_u: the user's confidence vector (see confidence.py); p_u: the user's unit tag profile
  (tags.py, from history and/or declared interests).
- CF block: EASE item-item weights with EDLAE dropout emphasis (ease.py) on items with
  ≥ `min_item_users` users, whose inputs are the user's items *and* the user's tag profile
  (scaled by a = `tag_feature_weight`): the profile columns learn which tags predict which items
  (+1% NDCG@10 on validation over EASE + tag cosine alone). The training score matrix is
  truncated to its top d_cf right singular vectors V_cf; P_cf = B V_cf and Q_cf (the profile rows
  of B V_cf) fold any history in (new events change the vector without retraining).
- Tag block: the tag-cosine score matrix Pᵤ Tᵀ (tags used by < `tag_min_df` items dropped)
  truncated the same way (V_tag, P_tag = Tᵀ V_tag);
  items with tags but no interactions get vectors here, which is how cold items are reached.
  `item_vector_from_tags` places an item that appeared after training.
- The last dimension carries a tiny popularity prior: it breaks ties and makes a user with no
  evidence at all (zero vector) receive the popularity ranking from the same query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd
from tagloop.tools.errors import InvalidInput
from tagloop.tools.recommender import ease as ease_solver
from tagloop.tools.recommender.confidence import confidence_matrix, confidence_vector
from tagloop.tools.recommender.data import Interactions, ItemTags
from tagloop.tools.recommender.tags import profile_vector, tfidf_item_tags, user_profiles

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RecParams:
    """Hyper-parameters; defaults are those tuned on a validation part of the Last.fm train split
    (bench/recsys.py): λ and dropout of EDLAE, the tag weight γ and the tag min_df."""

    ease_lambda: float = 25.0
    min_item_users: int = 2
    tag_weight: float = 0.3
    cf_dim: int = 128
    tag_dim: int = 127
    bias_scale: float = 1e-4
    svd_iters: int = 4
    dropout: float = 0.5
    tag_min_df: int = 5
    tag_feature_weight: float = 3.0

    def check(self) -> None:
        if self.ease_lambda <= 0:
            raise InvalidInput(f"ease_lambda must be > 0, got {self.ease_lambda}")
        if self.cf_dim < 1 or self.tag_dim < 0 or self.cf_dim + self.tag_dim + 1 > 2000:
            raise InvalidInput(
                "cf_dim must be >= 1, tag_dim >= 0, and together at most 1999 (pgvector limit)"
            )
        if min(self.tag_weight, self.tag_feature_weight) < 0 or min(self.min_item_users, self.tag_min_df) < 1:
            raise InvalidInput("tag weights must be >= 0, min_item_users and tag_min_df >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidInput(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass
class RecModel:
    """A trained recommender; every array is aligned with `item_ids` / `tags`."""

    params: RecParams
    item_ids: np.ndarray
    tags: np.ndarray
    item_vecs: np.ndarray  # n_items × d (float32)
    fold_cf: np.ndarray  # n_items × d_cf: confidence history → CF block
    fold_tag: np.ndarray  # n_tags × (d_cf + d_tag): unit tag profile → CF and tag blocks
    tag_to_item: np.ndarray  # n_tags × d_tag: tf-idf tags of a new item → its tag block
    item_tag_vectors: sp.csr_matrix  # n_items × n_tags, tf-idf, unit rows
    idf: np.ndarray
    popularity: np.ndarray  # number of training users per item

    @property
    def dim(self) -> int:
        return int(self.item_vecs.shape[1])

    def item_vectors(self) -> np.ndarray:
        return self.item_vecs

    def user_vector(
        self, item_idx: np.ndarray, weights: np.ndarray, tag_profile: dict[str, float] | None = None
    ) -> np.ndarray:
        """Fold a user in from history (item indices, raw weights) and/or declared tag interests."""
        item_idx = np.asarray(item_idx, dtype=np.int64)
        conf = confidence_vector(np.asarray(weights, dtype=np.float64))
        declared = self.declared_vector(tag_profile) if tag_profile else None
        profile = profile_vector(item_idx, conf, self.item_tag_vectors, declared)
        cf = conf @ self.fold_cf[item_idx] if item_idx.size else np.zeros(self.fold_cf.shape[1])
        return self._assemble(cf[None, :], profile[None, :] @ self.fold_tag)[0]

    def user_vectors(self, raw: sp.csr_matrix) -> np.ndarray:
        """`user_vector` for every row of a users × items raw-weight matrix (batch form)."""
        conf = confidence_matrix(raw)
        profiles = user_profiles(conf, self.item_tag_vectors)
        return self._assemble(np.asarray(conf @ self.fold_cf), np.asarray(profiles @ self.fold_tag))

    def _assemble(self, cf: np.ndarray, tag: np.ndarray) -> np.ndarray:
        """[cf | tag | 1] rows; a profile projection that also spans the CF block is added to it."""
        d_cf = cf.shape[1]
        if tag.shape[1] == self.dim - 1:
            cf, tag = cf + tag[:, :d_cf], tag[:, d_cf:]
        return np.hstack([cf, tag, np.ones((cf.shape[0], 1))]).astype(np.float32)

    def declared_vector(self, tag_profile: dict[str, float]) -> np.ndarray:
        """Dense idf-weighted vector over known tags from {tag: weight}; unknown tags are ignored."""
        index = {str(t): n for n, t in enumerate(self.tags)}
        out = np.zeros(len(self.tags))
        for tag, weight in tag_profile.items():
            n = index.get(tag.lower())
            if n is not None:
                out[n] = float(weight) * self.idf[n]
        return out

    def item_vector_from_tags(self, tags: dict[str, float]) -> np.ndarray:
        """Vector of an item unseen at training time from its tags alone (a cold item)."""
        vec = self.declared_vector({t: np.log1p(w) for t, w in tags.items()})
        norm = np.linalg.norm(vec)
        tag_block = (vec / norm) @ self.tag_to_item if norm > 0 else np.zeros(self.tag_to_item.shape[1])
        cf = np.zeros(self.fold_cf.shape[1])
        return np.concatenate([cf, tag_block, [0.0]]).astype(np.float32)

    def recommend(
        self, user_vecs: np.ndarray, k: int, exclude: sp.csr_matrix | None = None, batch: int = 512
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores per user (rank order), skipping `exclude`d (user × item)."""
        user_vecs = np.atleast_2d(user_vecs)
        n_items = self.item_vecs.shape[0]
        k = min(k, n_items)
        ids = np.full((user_vecs.shape[0], k), -1, dtype=np.int64)
        scores = np.full((user_vecs.shape[0], k), -np.inf, dtype=np.float32)
        excl = exclude.tocsr() if exclude is not None else None
        for start in range(0, user_vecs.shape[0], batch):
            block = user_vecs[start : start + batch] @ self.item_vecs.T
            if excl is not None:
                sub = excl[start : start + block.shape[0]].tocoo()
                keep = sub.col < n_items
                block[sub.row[keep], sub.col[keep]] = -np.inf
            top = np.argpartition(-block, k - 1, axis=1)[:, :k]
            top_scores = np.take_along_axis(block, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            ids[start : start + block.shape[0]] = np.take_along_axis(top, order, axis=1)
            scores[start : start + block.shape[0]] = np.take_along_axis(top_scores, order, axis=1)
        ids[~np.isfinite(scores)] = -1
        return ids, scores


def _top_right_vectors(matrix: np.ndarray, dim: int, iters: int, seed: int) -> np.ndarray:
    """Top `dim` right singular vectors (columns) of a dense matrix; fewer if its rank is lower."""
    dim = max(1, min(dim, min(matrix.shape) - 1)) if min(matrix.shape) > 1 else 1
    if min(matrix.shape) <= dim + 1:
        _, _, vt = np.linalg.svd(matrix, full_matrices=False)
        return np.asarray(vt[:dim].T)
    _, _, vt = randomized_svd(matrix, dim, n_iter=iters, random_state=seed)
    return np.asarray(vt.T)


def fit(
    interactions: Interactions,
    item_tags: ItemTags | None,
    params: RecParams,
    rng: np.random.Generator,
    progress: Progress | None = None,
) -> RecModel:
    """Train on a users × items raw-weight matrix and optional item tags aligned to its columns."""
    params.check()
    say = progress or (lambda _msg: None)
    raw = interactions.matrix.tocsr()
    if raw.nnz == 0:
        raise InvalidInput("no interactions to train on")
    n_items = raw.shape[1]
    conf = confidence_matrix(raw)
    popularity = np.asarray((raw > 0).sum(axis=0)).ravel().astype(np.float64)
    warm = np.flatnonzero(popularity >= params.min_item_users)
    if warm.size < 2:
        raise InvalidInput(f"fewer than 2 items have >= {params.min_item_users} users; nothing to learn from")
    tag_matrix = item_tags.matrix if item_tags is not None else sp.csr_matrix((n_items, 0))
    tag_names = item_tags.tags if item_tags is not None else np.asarray([], dtype=object)
    if tag_matrix.shape[0] != n_items:
        raise InvalidInput(f"item tags cover {tag_matrix.shape[0]} items but interactions have {n_items}")
    tag_vectors, idf = tfidf_item_tags(ItemTags(sp.csr_matrix(tag_matrix), tag_names), params.tag_min_df)
    profiles = user_profiles(conf, tag_vectors)
    n_tags = tag_vectors.shape[1]
    # user tag profiles as extra input columns of EASE (their weights predict items, never the reverse)
    feat = np.flatnonzero(profiles.getnnz(axis=0) > 0) if params.tag_feature_weight > 0 else np.zeros(0, int)
    say(f"EASE on {warm.size} items and {feat.size} tag features")
    inputs = sp.hstack([conf[:, warm], params.tag_feature_weight * profiles[:, feat]]).tocsr()
    solution = ease_solver.solve(inputs, params.ease_lambda, params.dropout)
    say("factorising the CF scores")
    seed = int(rng.integers(2**31))
    v_cf = _top_right_vectors(solution.scores[:, : warm.size], params.cf_dim, params.svd_iters, seed)
    d_cf = v_cf.shape[1]
    item_cf = np.zeros((n_items, d_cf))
    item_cf[warm] = v_cf
    folded = solution.apply(np.vstack([v_cf, np.zeros((feat.size, d_cf))]))
    fold_cf = np.zeros((n_items, d_cf))
    fold_cf[warm] = folded[: warm.size]

    tag_dim = params.tag_dim if tag_vectors.nnz and params.tag_weight > 0 else 0
    item_tag = np.zeros((n_items, tag_dim))
    fold_tag = np.zeros((n_tags, d_cf + tag_dim))
    fold_tag[feat, :d_cf] = params.tag_feature_weight * folded[warm.size :]
    tag_to_item = np.zeros((n_tags, tag_dim))
    if tag_dim:
        say("factorising the tag scores")
        dense_profiles = np.asarray(profiles.toarray(), dtype=np.float32)
        tag_scores = np.asarray(tag_vectors @ dense_profiles.T).T
        v_tag = _top_right_vectors(tag_scores, tag_dim, params.svd_iters, int(rng.integers(2**31)))
        item_tag[:, : v_tag.shape[1]] = v_tag
        fold_tag[:, d_cf : d_cf + v_tag.shape[1]] = params.tag_weight * np.asarray(tag_vectors.T @ v_tag)
        # a new item's tag block: least-squares map from its tf-idf tags to V_tag, via the profiles
        u_tag = tag_scores @ v_tag
        sigma = np.linalg.norm(u_tag, axis=0)
        tag_to_item[:, : v_tag.shape[1]] = dense_profiles.T @ (u_tag / np.maximum(sigma, 1e-12) ** 2)
    log_pop = np.log1p(popularity)
    bias = params.bias_scale * log_pop / max(log_pop.max(), 1e-12)
    item_vecs = np.hstack([item_cf, item_tag, bias[:, None]]).astype(np.float32)
    return RecModel(
        params=params,
        item_ids=np.asarray(interactions.item_ids, dtype=object),
        tags=np.asarray(tag_names, dtype=object),
        item_vecs=item_vecs,
        fold_cf=fold_cf.astype(np.float32),
        fold_tag=fold_tag.astype(np.float32),
        tag_to_item=tag_to_item.astype(np.float32),
        item_tag_vectors=tag_vectors,
        idf=idf,
        popularity=popularity,
    )
