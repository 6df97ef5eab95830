"""Scratch lab for issue 6 (cold-start items from tags); not part of the benchmark.

    nice -n 19 env OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/cold_lab.py [--test] [--oracles]

Kinds: "val2024" / "val7" = a nested 10% item hold-out inside the cold-start training set of
bench/recsys.py (validation carved from train, seeds 2024 and 7); "test" = the cold_start hold-out
itself (seed 99), printed only with --test. Each row ranks the held-out items among themselves for
every user who had one (recall@20, as `cold_start`). Fitted models are cached in /tmp.

Rows: the committed map (ridge λ 1, tag-activity prior 0.3); `vm`, the same map with every output
dimension rescaled so that its predictions on the warm items have the spread of the true factors
(servable: only the stored map changes); `vm + share`, plus 0.3 × (per-user z-scores) the share of
the item's tag applications the user makes on warm items (needs the users' own tag applications,
which the served user vector does not have). --oracles adds references that are NOT tag-only
models: item vectors from a model that saw the held-out interactions, a ridge map fitted with the
held-out items' own true factors, and the map with the items the user tagged ranked first.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recsys import DATA, load, relevant_of

from tagloop.evals.metrics import recall_at_k
from tagloop.tools.recommender.data import Interactions, ItemTags, build_item_tags
from tagloop.tools.recommender.model import RecModel, RecParams, fit
from tagloop.tools.recommender.tags import tag_factor_map

CACHE = Path("/tmp/cold_lab_cache")


@dataclass
class Setup:
    kind: str
    fit_m: sp.csr_matrix  # what the model was trained on
    held: sp.csr_matrix  # held-out interactions (relevance)
    held_items: np.ndarray
    excluded_items: np.ndarray  # every item whose interactions training never saw
    users: np.ndarray
    rel: list
    model: RecModel
    user_vecs: np.ndarray
    train_s: float


def hold_out(m: sp.csr_matrix, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """bench/recsys.py cold_start's split: 10% of the items with interactions, all of theirs."""
    rng = np.random.default_rng(seed)
    warm_items = np.flatnonzero(np.asarray((m > 0).sum(axis=0)).ravel() > 0)
    held_items = rng.choice(warm_items, size=warm_items.size // 10, replace=False)
    mask = np.zeros(m.shape[1], dtype=bool)
    mask[held_items] = True
    coo = m.tocoo()
    keep = ~mask[coo.col]
    fit_m = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=coo.shape)
    held = sp.csr_matrix((coo.data[~keep], (coo.row[~keep], coo.col[~keep])), shape=coo.shape)
    return fit_m, held, held_items


_BASE: dict = {}


def base() -> tuple[Interactions, ItemTags]:
    if not _BASE:
        train, _, tag_rows = load(None)
        _BASE["train"], _BASE["tags"] = train, build_item_tags(tag_rows, list(train.item_ids))
    return _BASE["train"], _BASE["tags"]


def setup(kind: str) -> Setup:
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"{kind}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    train, _ = base()
    fit_m, held, held_items = hold_out(train.matrix, 99)
    excluded = held_items
    if kind != "test":
        fit_m, held, held_items = hold_out(fit_m, int(kind.removeprefix("val")))
        excluded = np.concatenate([excluded, held_items])
    model, secs = _fit(fit_m)
    users = np.flatnonzero((np.diff(held.indptr) > 0) & (np.diff(fit_m.indptr) > 0))
    s = Setup(
        kind, fit_m, held, held_items, excluded, users, relevant_of(held, users), model,
        model.user_vectors(fit_m[users]), secs,
    )  # fmt: skip
    path.write_bytes(pickle.dumps(s))
    return s


def _fit(m: sp.csr_matrix) -> tuple[RecModel, float]:
    train, tags = base()
    start = time.perf_counter()
    model = fit(Interactions(m, train.user_ids, train.item_ids), tags, RecParams(), np.random.default_rng(0))
    return model, time.perf_counter() - start


def recall(s: Setup, scores: np.ndarray, k: int = 20) -> float:
    """Recall@k of a users × held-items score matrix (ranking among the held-out items)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(recall_at_k(s.held_items[top], s.rel, k))


def zrow(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-12)


def cold_scores(s: Setup, tag_map: np.ndarray) -> np.ndarray:
    """Scores of the held-out items placed by `tag_map` as item_vector_from_tags does (the prior's
    level, cold_norm, is the same for every item and does not change a ranking among them)."""
    _, tags = base()
    act = np.asarray(tags.matrix.tocsr()[s.held_items].maximum(0).sum(axis=1)).ravel()
    pred = np.asarray(s.model.item_tag_vectors[s.held_items] @ tag_map) * (1 + 0.3 * np.log1p(act))[:, None]
    return s.user_vecs[:, :-1].astype(np.float64) @ pred.T


def variance_matched(m: RecModel) -> np.ndarray:
    """The map with each output dimension rescaled to the spread of the true factors (warm items)."""
    warm = np.flatnonzero(m.popularity >= m.params.min_item_users)
    tag_map = m.tag_to_item.astype(np.float64)
    pred = np.asarray(m.item_tag_vectors[warm] @ tag_map)
    return tag_map * (m.item_vecs[warm, :-1].std(axis=0) / pred.std(axis=0))


def tag_applications(s: Setup) -> tuple[sp.csr_matrix, list[tuple[int, int]]]:
    """users × tags counts of tag applications on items whose interactions training saw, and every
    (user, item) tagging pair (the latter only for the leaky oracle)."""
    train, tags = base()
    names = {
        int(r.split("\t")[0]): r.split("\t")[1].lower()
        for r in (DATA / "tags.dat").read_text().splitlines()[1:]
    }
    tindex = {str(t): n for n, t in enumerate(tags.tags)}
    uindex = {u: n for n, u in enumerate(train.user_ids)}
    iindex = {str(i): n for n, i in enumerate(train.item_ids)}
    hidden = {int(i) for i in s.excluded_items}
    rows, cols, pairs = [], [], []
    for line in (DATA / "user_taggedartists.dat").read_text().splitlines()[1:]:
        u, a, t = line.split("\t")[:3]
        ui, ii, ti = uindex.get(u), iindex.get(a), tindex.get(names.get(int(t), ""))
        if ui is None or ii is None:
            continue
        pairs.append((ui, ii))
        if ti is not None and ii not in hidden:
            rows.append(ui)
            cols.append(ti)
    apps = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(train.user_ids), len(tags.tags)))
    return apps, pairs


def share_scores(s: Setup) -> np.ndarray:
    """Σ_t (user's applications of t on warm items / all applications of t there) × item count of t."""
    _, tags = base()
    apps, _ = tag_applications(s)
    total = np.asarray(apps.sum(axis=0)).ravel()
    share = apps[s.users] @ sp.diags(1.0 / np.maximum(total, 1.0))
    return np.asarray((share @ tags.matrix.tocsr()[s.held_items].T).todense())


def oracles(s: Setup) -> dict[str, float]:
    full, _ = _fit(sp.csr_matrix(s.fit_m + s.held))
    users_full = full.user_vectors(s.fit_m[s.users])
    out = {
        "warm vectors (saw the held-out interactions)": recall(s, users_full @ full.item_vecs[s.held_items].T)
    }
    warm = np.flatnonzero(full.popularity >= 2)
    _, tags = base()
    act = np.asarray(tags.matrix.tocsr()[s.held_items].sum(axis=1)).ravel()
    for lam in (0.1, 1.0):
        tag_map = tag_factor_map(full.item_tag_vectors, full.item_vecs[:, :-1].astype(np.float64), warm, lam)
        pred = np.asarray(full.item_tag_vectors[s.held_items] @ tag_map) * (1 + 0.3 * np.log1p(act))[:, None]
        out[f"ridge map fitted with the held-out items' factors, λ {lam}"] = recall(
            s, users_full[:, :-1] @ pred.T
        )
    _, pairs = tag_applications(s)
    pos, col = {u: n for n, u in enumerate(s.users)}, {i: n for n, i in enumerate(s.held_items)}
    tagged = np.zeros((s.users.size, s.held_items.size))
    for u, i in pairs:
        if u in pos and i in col:
            tagged[pos[u], col[i]] = 1.0
    base_scores = cold_scores(s, s.model.tag_to_item.astype(np.float64))
    out["map, items the user tagged first (who tagged: leakage)"] = recall(s, base_scores + 1e6 * tagged)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--test", action="store_true", help="also the cold_start test hold-out")
    parser.add_argument("--oracles", action="store_true", help="add the non-tag-only references")
    args = parser.parse_args()
    for kind in ("val2024", "val7", *(("test",) if args.test else ())):
        s = setup(kind)
        committed = cold_scores(s, s.model.tag_to_item.astype(np.float64))
        vm = cold_scores(s, variance_matched(s.model))
        rows = {
            "committed map": recall(s, committed),
            "vm": recall(s, vm),
            "vm + 0.3 share": recall(s, zrow(vm) + 0.3 * zrow(share_scores(s))),
        }
        if args.oracles:
            rows |= oracles(s)
        for name, value in rows.items():
            print(f"{kind:8s} {name:60s} {value:.4f}", flush=True)


if __name__ == "__main__":
    main()
