"""Short human reasons for recommended items, built from the evidence that scored them.

For item i and user u the score splits into evidence we can name:
- tags: the element-wise product of the user's tag profile and the item's tf-idf tag vector;
  the two largest shared tags give "because you play a lot of shoegaze and dream pop" (for tags
  that come from declared interests, not plays: "because you like shoegaze and dream pop");
- similar items: the CF block's contribution of each history item j, c_uj · (P_cf[j] · V_cf[i]);
  the largest gives "because you played Slowdive";
- otherwise (no history, no shared tags): "popular with listeners" for an item users played at
  training, "tagged A and B" (its heaviest tags) for one nobody played, which the tag map placed
  near the user's tags, and `DISCOVER` for one with neither.
A played item is named only when its share is a real pull: above `NOISE` (rounding: ~1e-18 for an
unrelated item) and at least `MIN_PULL` of the largest share any played item has on the list. A
jazz fan's rock items, there by the popularity prior alone, were "because you played <a jazz song>"
from shares of 1e-18 (and, in a small test world, 1% of the jazz items').
The words follow each recommended item's kind (tools/wording.py: "you read a lot of" for articles,
"you're into" for products); without kinds, those of tracks.
The larger of the two blocks' evidence picks the reason: all shared tags' part of the score against
all history items' CF part (the item named is the largest of those). Comparing the tags' total with
one history item's share named a played item for 0.1% of recommendations on Last.fm, where CF is a
quarter to a third of a typical score. Deterministic: ties break by index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from tagloop.tools.recommender.confidence import confidence_vector
from tagloop.tools.recommender.model import RecModel
from tagloop.tools.recommender.tags import profile_vector
from tagloop.tools.tagging_names import display_tag
from tagloop.tools.wording import LISTEN, Habit, habit

POPULAR = LISTEN.popular  # by users at training (the untrained API: all events); per kind: Habit.popular
DISCOVER = "one to discover"  # no evidence to name, no tags, no plays: what is true of it
NOISE = 1e-9  # a CF share this small is floating-point rounding, not a played item's pull
MIN_PULL = 0.05  # of the list's largest share: below it, a played item does not explain an item


def _name(model: RecModel, index: int, names: Mapping[str, str] | None) -> str:
    item_id = str(model.item_ids[index])
    return names.get(item_id, item_id) if names is not None else item_id


def explain(
    model: RecModel,
    item_idx: np.ndarray,
    weights: np.ndarray,
    recommended: np.ndarray,
    tag_profile: dict[str, float] | None = None,
    names: Mapping[str, str] | None = None,
    kinds: Sequence[str | None] | None = None,
) -> list[str]:
    """One reason per recommended item index, from the user's history (indices, raw weights),
    optional declared tags, optional display names by item id and the recommended items' kinds."""
    item_idx = np.asarray(item_idx, dtype=np.int64)
    conf = confidence_vector(np.asarray(weights, dtype=np.float64))
    declared = model.declared_vector(tag_profile) if tag_profile else None
    profile = profile_vector(item_idx, conf, model.item_tag_vectors, declared)
    # which of the profile's tags the user plays (the rest come from declared interests only)
    played = (
        (profile if declared is None else profile_vector(item_idx, conf, model.item_tag_vectors, None))
        if item_idx.size
        else np.zeros_like(profile)
    )
    recommended = np.asarray(recommended, dtype=np.int64)
    rows = np.maximum(recommended, 0)
    # tag evidence of every recommended item at once: its tf-idf tags times the user's profile
    shared = sp.csr_matrix(model.item_tag_vectors[rows].multiply(profile[None, :]))
    d_cf = model.fold_cf.shape[1]
    contrib = np.zeros((0, rows.size))
    if item_idx.size:  # c_uj (P_cf[j] · V_cf[i]) for history item j (rows) and recommendation i
        contrib = conf[:, None] * (model.fold_cf[item_idx] @ model.item_vecs[rows, :d_cf].T)
    floor = max(NOISE, MIN_PULL * float(contrib.max())) if contrib.size else NOISE
    reasons = []
    for n, rec in enumerate(recommended):
        words = habit(kinds[n]) if kinds is not None else LISTEN
        if rec < 0:
            reasons.append(words.popular)
            continue
        lo, hi = shared.indptr[n], shared.indptr[n + 1]
        data, cols = shared.data[lo:hi], shared.indices[lo:hi]
        order = np.lexsort((cols, -data))
        top_cols = [int(cols[o]) for o in order[:2] if data[o] > 0]
        top_tags = [display_tag(str(model.tags[c])) for c in top_cols]
        tag_evidence = model.params.tag_weight * float(data.sum())
        cf_evidence, best_item, best_share = 0.0, -1, 0.0
        if item_idx.size:  # the CF block as a whole against the tag block as a whole
            best = int(np.argmax(contrib[:, n]))
            cf_evidence, best_item, best_share = (
                float(contrib[:, n].sum()),
                int(item_idx[best]),
                contrib[best, n],
            )
        if best_share < floor and not top_tags:
            reasons.append(_plain(model, int(rec), words))
        elif top_tags and (tag_evidence >= cf_evidence or best_share < floor):
            reasons.append(_tag_reason(top_cols, top_tags, played, words))
        else:
            reasons.append(words.item.format(_name(model, best_item, names)))
    return reasons


def _plain(model: RecModel, row: int, words: Habit) -> str:
    """The reason of an item no evidence of the user's names: popular when users played it at
    training, else its own heaviest tags, else `DISCOVER`."""
    if model.popularity[row] > 0:
        return words.popular
    vec = model.item_tag_vectors[row]
    if vec.nnz:
        order = np.lexsort((vec.indices, -vec.data))[:2]
        return "tagged " + " and ".join(display_tag(str(model.tags[vec.indices[o]])) for o in order)
    return DISCOVER


def _tag_reason(cols: list[int], names: list[str], played: np.ndarray, words: Habit = LISTEN) -> str:
    """ "because you play a lot of A and B" for tags of the user's history, "because you like A"
    for declared interests, "because you play a lot of A and like B" for one of each (the first
    words as the item's kind has them)."""
    plays = [n for c, n in zip(cols, names, strict=True) if played[c] > 0]
    likes = [n for c, n in zip(cols, names, strict=True) if played[c] <= 0]
    if plays and likes:
        return f"because {words.often} {' and '.join(plays)} and like {' and '.join(likes)}"
    if plays:
        return f"because {words.often} {' and '.join(plays)}"
    return f"because you like {' and '.join(likes)}"
