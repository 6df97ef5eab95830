"""Confidence of implicit feedback: from event types and counts to one weight per (user, item).

Two steps, both documented here so training and serving agree:
1. `event_weight(type, value)` turns one event into a non-negative weight (a play counts its
   `value` plays, or 1; a like 5, …; no other type's value counts, e.g. a convert's revenue;
   negative events such as skip/dislike carry 0, and so do custom event types, as in the tag
   profiles). Summing these per (user, item) gives the raw weight (`RAW_WEIGHT`, the same
   SQL for training and serving); for Last.fm that is the listen count. A dislike not followed by
   a like, save, share, add_to_playlist or convert of the item vetoes it: its raw weight is 0, so
   "played it, then disliked it" adds nothing (the item still counts as seen).
2. `confidence(raw)` maps raw weights of one user to (0, 1]: c = log1p(w) / max_user log1p(w).
   The log damps heavy listeners' counts, the per-user max keeps every user's history on the same
   scale (a fan with 10,000 plays and a casual user with 12 weigh alike). Zero stays zero.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tagloop.tools.ingest.fields import VALUE_CAP

EVENT_WEIGHTS: dict[str, float] = {
    "impression": 0.0,
    "play": 1.0,
    "complete": 2.0,
    "skip": 0.0,
    "like": 5.0,
    "dislike": 0.0,
    "save": 4.0,
    "add_to_playlist": 4.0,
    "share": 4.0,
    "open": 1.0,
    "click": 1.0,
    "convert": 5.0,
    "dismiss": 0.0,
    "unsubscribe": 0.0,
}


# an event's value counts up to VALUE_CAP (imports refuse larger ones; one stored before, e.g. 1e308,
# overflowed the float8 sum and failed every fold, run and training that read its user)

# one raw weight per (user, item) over the user's events `e` grouped by item (see the docstring)
RAW_WEIGHT = f"""case
    when max(e.ts) filter (where e.type = 'dislike') >= coalesce(
        max(e.ts) filter (where e.type in ('like', 'save', 'share', 'add_to_playlist', 'convert')),
        '-infinity'
    )
    then 0.0
    else sum(coalesce((%(weights)s::jsonb ->> e.type)::float8, 0.0)
             * case when e.type = 'play' and e.value > 0 then least(e.value, {VALUE_CAP:.0f}) else 1.0 end)
end"""


def event_weight(event_type: str, value: float | None = None) -> float:
    """Weight of one event: the type's base weight, times `value` for a play (its play count). Only
    a play's value is a count: a convert's is revenue, and weighing it made a 259-unit purchase
    1,295 and a 0.5-unit one weaker than a like — the price, not the user, decided."""
    base = EVENT_WEIGHTS.get(event_type, 0.0)
    counted = event_type == "play" and value is not None and value > 0
    return base * (min(value, VALUE_CAP) if counted and value is not None else 1.0)


def confidence_vector(weights: np.ndarray) -> np.ndarray:
    """Confidence of one user's raw weights (1-d array) as described in the module docstring."""
    logged = np.log1p(np.maximum(np.asarray(weights, dtype=np.float64), 0.0))
    top = logged.max() if logged.size else 0.0
    return logged / top if top > 0 else logged


def confidence_matrix(raw: sp.csr_matrix) -> sp.csr_matrix:
    """Row-wise `confidence_vector` of a users × items matrix of raw weights."""
    out = raw.tocsr().astype(np.float64, copy=True)
    out.data = np.log1p(np.maximum(out.data, 0.0))
    lengths = np.diff(out.indptr)
    tops = np.zeros(out.shape[0])
    nonempty = lengths > 0
    tops[nonempty] = np.maximum.reduceat(out.data, out.indptr[:-1][nonempty])
    scale = np.repeat(np.where(tops > 0, tops, 1.0), lengths)
    out.data = out.data / scale
    return out
