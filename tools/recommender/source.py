"""The collaborative-filtering candidate source: the active recommender, served from Postgres.

Implements tools/candidates.py's `CandidateSource`: for a batch of users it folds each user in from
their stored events and declared interests (serving.py), then runs one LATERAL statement over the
model's HNSW index (pg.top_k_batch) that skips seen items. Without a trained model it proposes
nothing, so listing it in the settings is harmless before the first `tagloop train`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from tagloop.tools.recommender import pg, serving
from tagloop.tools.retrieval import Candidate
from tagloop.tools.timed import Timed


@dataclass(frozen=True)
class CFSource:
    """The active model's top k per user. Which model is active is looked up once per `max_age`
    of the run clock (a round trip per batch otherwise, also while no model is trained): a model
    activated meanwhile serves from the next lookup on."""

    name: str = "cf"
    weight: float = 1.0
    max_age: timedelta = timedelta(minutes=1)
    _active: Timed[serving.Served | None] = field(default_factory=Timed, compare=False, repr=False)

    def fetch(
        self, conn: psycopg.Connection[Any], user_ids: list[str], k: int, now: datetime
    ) -> dict[str, list[Candidate]]:
        served = self._active.get(now, self.max_age, lambda: serving.active(conn))
        if served is None or not user_ids:
            return {u: [] for u in user_ids}
        serving.place_new_items(conn, served)
        found = serving.histories(conn, served, user_ids)
        vecs = np.vstack([serving.user_vector(served, found[u]) for u in user_ids])
        hits = pg.top_k_batch(conn, served.row, user_ids, vecs, k)
        return {
            u: [Candidate(h.item_id, h.title, h.provider_id, h.score, self.name) for h in hits[u]]
            for u in user_ids
        }
