"""`tagloop train`: fit the recommender on the stored event stream and serve it from Postgres.

1. Events → one raw weight per (user, item): the sum of `confidence.event_weight(type, value)`
   computed in SQL (plays × count, likes 5, saves 4, …, negatives 0 but still "seen"); `fit` turns
   raw weights into per-user confidences (confidence.py).
2. Item tags: the confident rows of item_tags (confidence ≥ 0.5; imported, confirmed and
   propagated tags alike), for every item of the catalogue — items nobody played yet still get a
   tag-block vector, which is how a new release reaches its fans.
3. `fit` (no transaction open), then in one transaction: the model row with its
   model.json/model.npz, every item vector (binary COPY), the model's HNSW index, every user's
   vector in `rec_user_vectors` stamped with the user's last event seq and declared interests
   (read before the events, so serving refolds a user whose events arrived during training), and
   the switch of the active model. That transaction is run again when a deadlock with a request
   aborts it. After it, `user_profiles.embedding` of every user, a chunk per transaction (a
   failure there is a warning: the new model is already serving). Models older than the one
   before are dropped afterwards, each in a short transaction of its own: dropping an index locks
   item_vectors, which the requests being served read, and inside the big transaction it
   deadlocked with a request waiting for a user's row the training had written. A copy of the
   model directory is kept in `$TAGLOOP_HOME/models/<id>` for inspection (copies of models the
   database dropped are removed).
Timings and sizes are returned (and printed by the CLI); progress goes to `progress`.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from tagloop.tools.errors import InvalidInput
from tagloop.tools.interests import parse_interests
from tagloop.tools.recommender import pg, user_vectors
from tagloop.tools.recommender.confidence import EVENT_WEIGHTS, RAW_WEIGHT
from tagloop.tools.recommender.data import Interactions, build_interactions, build_item_tags
from tagloop.tools.recommender.model import RecModel, RecParams, fit
from tagloop.tools.recommender.store import save
from tagloop.tools.store import db

Progress = Callable[[str], None]

RAW_WEIGHTS = f"""
select e.user_id, e.item_id, {RAW_WEIGHT} as w
from events e
where e.item_id is not null
group by e.user_id, e.item_id
"""

# each user's last event and declared interests, the stamp of the stored vector (rec_user_vectors)
USER_STAMPS = """
select u.id as user_id, u.attributes -> 'interests' as interests,
       coalesce((select max(e.seq + 0) from events e where e.user_id = u.id), 0) as seq  -- + 0: pg._FRESH
from users u
"""

STORE_ATTEMPTS = 3  # the store step is run again when PostgreSQL aborts it (db.transact_on)
DROP_LOCK_TIMEOUT = "1s"  # how long dropping an old model waits for the requests reading item_vectors
DROP_ATTEMPTS = 3

ITEM_TAGS = """
select it.item_id, t.name, it.weight from item_tags it join tags t on t.id = it.tag_id
where it.confidence >= 0.5
"""


@dataclass
class TrainReport:
    model_id: int
    dim: int
    users: int
    items: int
    warm_items: int
    tags: int
    interactions: int
    seconds: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def training_data(
    conn: psycopg.Connection[Any],
) -> tuple[list[tuple[str, str, float]], list[str], list[tuple[str, str, float]]]:
    """(user, item, raw weight) triples, every catalogue item id, (item, tag, weight) triples."""
    triples = [
        (r["user_id"], r["item_id"], float(r["w"]))
        for r in conn.execute(RAW_WEIGHTS, {"weights": json.dumps(EVENT_WEIGHTS)})
    ]
    items = [r["id"] for r in conn.execute("select id from items order by id")]
    tags = [(r["item_id"], str(r["name"]).lower(), float(r["weight"])) for r in conn.execute(ITEM_TAGS)]
    return triples, items, tags


def model_bytes(model: RecModel) -> tuple[bytes, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        save(model, Path(tmp))
        return (Path(tmp) / "model.json").read_bytes(), (Path(tmp) / "model.npz").read_bytes()


def train(
    conn: psycopg.Connection[Any],
    *,
    params: RecParams | None = None,
    seed: int = 7,
    home: Path | None = None,
    progress: Progress | None = None,
) -> TrainReport:
    """Fit on everything stored and make the result the served model. Commits: the reads' transaction
    before the fit, then the store step in a transaction of its own (model, vectors, index and the
    switch, so a reader sees the old model or the new one), run again when a deadlock with a request
    aborts it (the fit is not redone); older models are dropped after it (`drop_retired`)."""
    say = progress or (lambda _msg: None)
    params = params or RecParams()
    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    say("reading events and item tags")
    # read before the events: a vector stamped older than what it folds in is only refolded once
    stamps = {r["user_id"]: (int(r["seq"]), r["interests"]) for r in conn.execute(USER_STAMPS)}
    triples, item_ids, tag_rows = training_data(conn)
    if not triples:
        raise InvalidInput("no events with an item to train on; import events first (tagloop import events)")
    provider_of = {r["id"]: r["provider_id"] for r in conn.execute("select id, provider_id from items")}
    conn.commit()  # no transaction stays open during the fit
    inter = build_interactions(triples, item_ids)
    item_tags = build_item_tags(tag_rows, [str(i) for i in inter.item_ids])
    lap("read")
    say(
        f"fitting on {inter.matrix.shape[0]:,} users × {inter.matrix.shape[1]:,} items, "
        f"{len(item_tags.tags):,} tags"
    )
    model = fit(inter, item_tags, params, np.random.default_rng(seed), progress=say)
    lap("fit")
    meta, arrays = model_bytes(model)
    warm = int((model.popularity >= params.min_item_users).sum())
    stats = {
        "users": int(inter.matrix.shape[0]),
        "items": len(model.item_ids),
        "warm_items": warm,
        "tags": len(model.tags),
        "interactions": int(inter.matrix.nnz),
        "seed": seed,
    }
    users = [str(u) for u in inter.user_ids]
    embeddings = model.user_vectors(inter.matrix)  # user_profiles.embedding: without declared interests
    stored = _stored_users(model, inter, users, embeddings.copy(), stamps, provider_of)
    sizes = {
        "model_json": len(meta),
        "model_npz": len(arrays),
        "item_vectors": int(model.item_vectors().nbytes),
        "user_vectors": int(embeddings.nbytes),
    }

    def store() -> int:
        model_id = pg.create_model(conn, model.dim, asdict(params), stats)
        pg.store_files(conn, model_id, meta, arrays)
        say(f"storing {len(model.item_ids):,} item vectors (dim {model.dim}) as model {model_id}")
        pg.copy_item_vectors(conn, model_id, [str(i) for i in model.item_ids], model.item_vectors())
        lap("store_items")
        say("building the HNSW index")
        pg.build_index(conn, model_id, model.dim)
        lap("index")
        say("writing user vectors")
        user_vectors.write_user_vectors(conn, model_id, stored)
        lap("user_vectors")
        pg.activate(conn, model_id)
        pg.update_stats(conn, model_id, {"seconds": seconds, "bytes": sizes})
        return model_id

    model_id = db.transact_on(
        conn,
        store,
        attempts=STORE_ATTEMPTS,
        on_retry=lambda _: say("storing the model deadlocked with a concurrent request; storing it again"),
    )
    try:
        _write_embeddings(conn, users, embeddings)
    except psycopg.Error as exc:  # the model is active: its training succeeded
        say(
            f"warning: users' profile embeddings not all written ({type(exc).__name__});"
            " the next train writes them"
        )
    drop_retired(conn, say)
    if home is not None:
        target = home / "models" / str(model_id)
        target.mkdir(parents=True, exist_ok=True)
        (target / "model.json").write_bytes(meta)
        (target / "model.npz").write_bytes(arrays)
        _prune_model_dirs(conn, home / "models")
    return TrainReport(
        model_id=model_id,
        dim=model.dim,
        users=stats["users"],
        items=stats["items"],
        warm_items=warm,
        tags=stats["tags"],
        interactions=stats["interactions"],
        seconds=seconds,
        bytes=sizes,
    )


EMBEDDING_CHUNK = 2000  # users' `user_profiles.embedding` rows written (and locked) per transaction


def _write_embeddings(conn: psycopg.Connection[Any], users: list[str], embeddings: np.ndarray) -> None:
    """`user_profiles.embedding` of every user, after the model's switch, a chunk per transaction in
    user-id order (the profile folder's lock order), each run again as a deadlock victim. Written
    in the switch's transaction they held every user's profile row until it committed: the profile
    folder, and every read that folds its user's events first, waited for the whole store step."""
    order = sorted(range(len(users)), key=users.__getitem__)
    for start in range(0, len(order), EMBEDDING_CHUNK):
        part = order[start : start + EMBEDDING_CHUNK]
        write = functools.partial(
            user_vectors.write_user_embeddings, conn, [users[i] for i in part], embeddings[part]
        )
        db.transact_on(conn, write, attempts=STORE_ATTEMPTS)


def _stored_users(
    model: RecModel,
    inter: Interactions,
    users: list[str],
    vecs: np.ndarray,
    stamps: dict[str, tuple[int, Any]],
    provider_of: dict[str, str | None],
) -> list[user_vectors.StoredUser]:
    """Every user's row of rec_user_vectors: `vecs` with the declared interests folded in, the stamp
    and the history and providers the reasons need."""
    raw = inter.matrix.tocsr()
    providers = [provider_of.get(str(i)) for i in inter.item_ids]
    stored = []
    for n, user in enumerate(users):
        seq, declared = stamps.get(user, (0, None))
        items, weights = (
            raw.indices[raw.indptr[n] : raw.indptr[n + 1]],
            raw.data[raw.indptr[n] : raw.indptr[n + 1]],
        )
        if declared is not None and (interests := parse_interests(declared)):
            vecs[n] = model.user_vector(items, weights, interests)  # part of the served vector
        played = sorted({p for i, w in zip(items, weights, strict=True) if w > 0 and (p := providers[i])})
        stored.append(user_vectors.StoredUser(user, vecs[n], seq, declared, items, weights, played))
    return stored


def drop_retired(conn: psycopg.Connection[Any], progress: Progress | None = None) -> list[int]:
    """Drop the models older than the active one and the one before it (`pg.KEEP_MODELS`), each in
    a transaction of its own that waits at most `DROP_LOCK_TIMEOUT` for its locks (dropping the
    model's index waits for the recommendations being served, and requests arriving meanwhile wait
    behind it), tried `DROP_ATTEMPTS` times; a model still in use is left for the next training.
    Call it with no transaction open. Returns the ids dropped."""
    say = progress or (lambda _msg: None)
    with conn.transaction():
        obsolete = pg.obsolete_models(conn)
    dropped = []
    for model_id in obsolete:
        for _ in range(DROP_ATTEMPTS):
            try:
                with conn.transaction():
                    conn.execute("select set_config('lock_timeout', %(t)s, true)", {"t": DROP_LOCK_TIMEOUT})
                    if pg.drop_model(conn, model_id):
                        dropped.append(model_id)
                break
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
                continue
        else:
            say(f"old model {model_id} is still being read; the next training drops it")
    return dropped


def _prune_model_dirs(conn: psycopg.Connection[Any], models: Path) -> None:
    """Remove the copies of models the database no longer keeps (it keeps the active one and one
    before it): 40 MB each on Last.fm, and they piled up with every training."""
    kept = {str(r["id"]) for r in conn.execute("select id from rec_models")}
    for path in models.iterdir():
        if path.is_dir() and path.name.isdigit() and path.name not in kept:
            shutil.rmtree(path, ignore_errors=True)
