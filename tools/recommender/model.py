"""The tagloop recommender: a tag-aware EASE blend in servable low-rank form (`fit`, `RecModel`).

Scores are one inner product, so Postgres can serve them with pgvector
(`order by item_vec <#> user_vec limit k`):

    score(u, i) = user_vec(u) · item_vec(i)
    S           = X B (EASE, warm items)  +  γ · P Tᵀ (tag cosine, every tagged item)
    item_vec(i) = [ V[i] (d)                          | bias_scale · pop_i (1) ]
    user_vec(u) = [ c_u B V  +  p_u (a · B_p V + γ T V) | 1 ]

- c_u: the user's confidence vector (see confidence.py); p_u: the user's unit tag profile
  (tags.py, from history and/or declared interests); T: tf-idf item tags (tags used by
  < `tag_min_df` items dropped).
- EASE item-item weights with EDLAE dropout emphasis (ease.py) on items with ≥ `min_item_users`
  users, whose inputs are the user's items *and* the user's tag profile (scaled by
  a = `tag_feature_weight`; B_p are the profile rows of B): the profile columns learn which tags
  predict which items (+1% NDCG@10 on validation over EASE + tag cosine alone).
- `joint` (default): the blended training scores S are factorised together, V = top d = cf_dim +
  tag_dim right singular vectors (randomised SVD on S as an operator, lowrank.py, never dense).
  On Last.fm this beat truncating the two parts separately (val NDCG@10 +0.3%, test +1% on both
  splits) and gives more items a say (coverage@10 up). Every user vector is linear in (c_u, p_u),
  so new events change it without retraining. d = 383 (cf_dim 256 + tag_dim 127, served dim
  384) won on validation over 255 on both Last.fm splits.
- Cold items (tags, no interactions at training, or added after it: `item_vector_from_tags`) get
  factors predicted from their tf-idf tags by a ridge map fitted on the warm items (tags.py,
  λ = `cold_ridge`), scaled by (1 + `cold_prior` · log1p(tag applications)) / `cold_norm`: the tag
  activity is the only popularity a new item has (scaling, not the bias dimension, so a user
  without evidence still gets the popularity order of warm items), and `cold_norm`, the mean of
  that factor over the tagged catalogue at training, keeps cold items on the level of the map as a
  whole, so the prior reorders cold items among themselves without pushing them over warm ones.
  Held-out Last.fm items ranked among themselves (bench/recsys.py `cold_start`): recall@20 0.469
  (projection of the item's tag column of S on the factors) -> 0.535 with the ridge map (λ 1) ->
  0.559 with the prior 0.3 (validation carved from train: 0.593 -> 0.618; 0.3 and 0.5 tie there,
  0.2 0.617, 1.0 0.614). Without `cold_norm` the prior cost warm test NDCG@10 0.265 -> 0.231; with
  it 0.2654 -> 0.2645. Tried on the same validation and not better than 0.618 (so not used): ridge
  from tags straight to each user's confidences (0.58), two-sided bilinear user-profile × item-tag
  ridge over the top 3,000 tags (0.58-0.59; blended with the map 0.61), tag-kNN over warm items
  (0.53), tf-idf + PPMI-SVD tag-embedding features (0.59), least-squares item factors against the
  served user vectors as the map's target (0.618), min_df 1-2 (≤ 0.58). On two nested hold-outs
  (10% of the items left in the cold-start training set, seeds 2024 / 7; map + prior 0.604 / 0.619):
  ridge weighted by popularity^α 0.596-0.603 / 0.614-0.619, BM25 tag weights 0.602-0.607 /
  0.618-0.620, binary tags 0.605 / 0.613, raw counts 0.572 / 0.597, a linear tags → vector model
  softmax-trained against the served user vectors 0.617 / 0.633 (with fold-in dropout 0.614),
  mixes with the tag-profile cosine and log activity ≤ 0.621 / 0.639; a one-hidden-layer tag tower
  trained the same way 0.621 / 0.646, on test 0.559 -> 0.588 (2.22x), but it took training from
  13 s to 57 s and cold items among all items from 0.332 to 0.150, so it was reverted (9df469d).
  Later, on the same two hold-outs (bench/cold_lab.py): each output dimension of the map rescaled
  to the spread of the true factors on the warm items 0.613 / 0.629, test 0.568 (+0.009, under the
  +0.02 bar; it also lifts cold items over warm ones unless renormalised: not adopted); tag
  expansion by tag co-occurrence ≤ 0.605 / 0.621; thinned copies of warm items' tag counts ≤ 0.607
  / 0.619; truncating or shrinking the later dimensions ≤ 0.604 / 0.618; the map fitted on
  long-tail warm items only ≤ 0.600 / 0.618; softmax fine-tuning of the map over warm or long-tail
  items ≤ 0.615 / 0.630 (no gain over its start). The users' own tag applications on warm items
  (not an input of the served user vector) add a little: the share of an item's tag applications
  the user makes, blended by per-user z-scores, 0.621 / 0.642, test 0.580 (2.19x). References that
  are not tag-only models: item vectors from a model that saw the held-out interactions 0.810 /
  0.820, test 0.794 (exactly the 3x goal); a ridge map fitted with the held-out items' own factors
  0.701 / 0.709, test 0.667; the map with the items each user tagged ranked first 0.659 / 0.673,
  test 0.617. About 29% of held-out items
  have no tags at all (7.5% of the relevant pairs), so no tag model reaches them.
- `joint=False`: the former layout, [V_cf (cf_dim) | V_tag (tag_dim) | bias] with each part
  truncated on its own.
- The last dimension carries a tiny popularity prior: it breaks ties and makes a user with no
  evidence at all (zero vector) receive the popularity ranking from the same query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from tagloop.tools.errors import InvalidInput
from tagloop.tools.recommender import ease as ease_solver
from tagloop.tools.recommender.confidence import confidence_matrix, confidence_vector
from tagloop.tools.recommender.data import Interactions, ItemTags
from tagloop.tools.recommender.lowrank import Operator, top_right_vectors
from tagloop.tools.recommender.tags import profile_vector, tag_factor_map, tfidf_item_tags, user_profiles

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RecParams:
    """Hyper-parameters; defaults are those tuned on a validation part of the Last.fm train split
    (bench/recsys.py): λ and dropout of EDLAE, the tag weight γ, the tag min_df, the layout."""

    ease_lambda: float = 25.0
    min_item_users: int = 2
    tag_weight: float = 0.3
    cf_dim: int = 256
    tag_dim: int = 127
    bias_scale: float = 1e-4
    svd_iters: int = 4
    dropout: float = 0.5
    tag_min_df: int = 5
    tag_feature_weight: float = 3.0
    joint: bool = True
    cold_ridge: float = 1.0
    cold_prior: float = 0.3

    def check(self) -> None:
        if self.ease_lambda <= 0:
            raise InvalidInput(f"ease_lambda must be > 0, got {self.ease_lambda}")
        if self.cf_dim < 1 or self.tag_dim < 0 or self.cf_dim + self.tag_dim + 1 > 2000:
            raise InvalidInput(
                "cf_dim must be >= 1, tag_dim >= 0, and together at most 1999 (pgvector limit)"
            )
        if min(self.tag_weight, self.tag_feature_weight) < 0 or min(self.min_item_users, self.tag_min_df) < 1:
            raise InvalidInput("tag weights must be >= 0, min_item_users and tag_min_df >= 1")
        if self.cold_ridge <= 0 or self.cold_prior < 0:
            raise InvalidInput("cold_ridge must be > 0 and cold_prior >= 0")
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
    tag_to_item: np.ndarray  # n_tags × (d - 1): tf-idf tags of a new item → its factors
    item_tag_vectors: sp.csr_matrix  # n_items × n_tags, tf-idf, unit rows
    idf: np.ndarray
    popularity: np.ndarray  # number of training users per item
    cold_norm: float = 1.0  # mean cold-prior scale over the tagged catalogue at training

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
        used = np.flatnonzero(profile)  # a profile touches few of the tags: skip the zero rows
        return self._assemble(cf[None, :], (profile[used] @ self.fold_tag[used])[None, :])[0]

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
        out = np.zeros(self.dim, dtype=np.float32)
        if norm > 0:  # the map fills the last dimensions before the popularity one
            activity = sum(max(float(w), 0.0) for w in tags.values())
            scale = (1.0 + self.params.cold_prior * np.log1p(activity)) / (self.cold_norm * norm)
            out[self.dim - 1 - self.tag_to_item.shape[1] : self.dim - 1] = scale * vec @ self.tag_to_item
        return out

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


def _score_operators(
    solution: ease_solver.EaseSolution,
    warm: np.ndarray,
    n_items: int,
    profiles: sp.csr_matrix,
    tag_vectors: sp.csr_matrix,
) -> tuple[Operator, Operator]:
    """The users × items CF scores (X B on the warm columns, zero elsewhere) and tag cosines P Tᵀ."""
    n_in = solution.inv_lam.size

    def cf_times(v: np.ndarray) -> np.ndarray:
        padded = np.zeros((n_in, v.shape[1]))
        padded[: warm.size] = v[warm]
        return solution.scores_times(padded)

    def cf_t_times(u: np.ndarray) -> np.ndarray:
        out = np.zeros((n_items, u.shape[1]))
        out[warm] = solution.scores_t_times(u)[: warm.size]
        return out

    shape = (profiles.shape[0], n_items)
    used = np.flatnonzero(tag_vectors.getnnz(axis=0) > 0)  # profiles are dense on these columns
    dense_profiles, used_tags = profiles[:, used].toarray(), sp.csr_matrix(tag_vectors[:, used])
    return (
        Operator(shape, cf_times, cf_t_times),
        Operator(
            shape,
            lambda v: dense_profiles @ np.asarray(used_tags.T @ v),
            lambda u: np.asarray(used_tags @ (dense_profiles.T @ u)),
        ),
    )


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
    if not (raw.data > 0).any():
        raise InvalidInput(
            "no interaction carries a positive weight (impressions, skips and dislikes alone say nothing "
            "about what users like): nothing to learn from"
        )
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
    cf_op, tag_op = _score_operators(solution, warm, n_items, profiles, tag_vectors)
    use_tags = bool(tag_vectors.nnz) and params.tag_weight > 0
    tag_dim = params.tag_dim if use_tags and not params.joint else 0
    say("factorising the blended scores" if params.joint else "factorising the CF scores")
    cf_dim = params.cf_dim + (params.tag_dim if params.joint else 0)
    blend = cf_op + tag_op.scaled(params.tag_weight) if params.joint and use_tags else cf_op
    v_cf, _ = top_right_vectors(blend, cf_dim, params.svd_iters, rng)
    d_cf = v_cf.shape[1]
    folded = solution.apply(np.vstack([v_cf[warm], np.zeros((feat.size, d_cf))]))
    fold_cf = np.zeros((n_items, d_cf))
    fold_cf[warm] = folded[: warm.size]
    fold_tag = np.zeros((n_tags, d_cf + tag_dim))
    fold_tag[feat, :d_cf] = params.tag_feature_weight * folded[warm.size :]
    item_tag = np.zeros((n_items, tag_dim))
    if params.joint and use_tags:
        fold_tag += params.tag_weight * np.asarray(tag_vectors.T @ v_cf)
    if tag_dim:
        say("factorising the tag scores")
        v_tag, _ = top_right_vectors(tag_op, tag_dim, params.svd_iters, rng)
        item_tag[:, : v_tag.shape[1]] = v_tag
        fold_tag[:, d_cf : d_cf + v_tag.shape[1]] = params.tag_weight * np.asarray(tag_vectors.T @ v_tag)
    factors = np.hstack([v_cf, item_tag])
    log_pop = np.log1p(popularity)
    bias = params.bias_scale * log_pop / max(log_pop.max(), 1e-12)
    # cold items: factors predicted from their tags by a ridge map fitted on the warm items
    tag_to_item = tag_factor_map(tag_vectors, factors, warm, params.cold_ridge)
    tagged = tag_vectors.getnnz(axis=1) > 0
    cold = np.flatnonzero((popularity == 0) & tagged)
    activity = np.asarray(sp.csr_matrix(tag_matrix).maximum(0).sum(axis=1)).ravel()
    prior = 1.0 + params.cold_prior * np.log1p(activity)
    cold_norm = float(prior[tagged].mean()) if tagged.any() else 1.0
    factors[cold] = (prior[cold] / cold_norm)[:, None] * (tag_vectors[cold] @ tag_to_item)
    item_vecs = np.hstack([factors, bias[:, None]]).astype(np.float32)
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
        cold_norm=cold_norm,
    )
