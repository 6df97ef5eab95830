"""How simulated users answer a delivered message — vectorised over a day's messages.

For message m to user u, delivered at t with slate items i_1..i_k (match m_j = `World.match`):

- slate match  s = Σ_j w_j m_j / Σ_j w_j with attention w_j = 1/log2(j + 1) (j = 1..k);
- activity     a = the user's true activity at t's local hour (`World.clock`, max 1);
- fatigue      f = messages the user got in the 7 days before t;
- open         P = σ(open_bias + open_match·(s − ref) + open_activity·a − open_fatigue·f + b_u), where
               b_u is the user's own open propensity, N(0, user_sd²) fixed by the seed;
- click        after an open, slot j independently: P = w_j · σ(click_bias + click_match·(m_j − ref));
- like / skip  a clicked item is liked with P = σ(like_bias + like_match·(m_j − ref)), else skipped;
- unsubscribe  per delivered message, opened or not:
               P = σ(unsub_bias + unsub_fatigue·f − unsub_match·(s − ref)).
`ref` (match_ref) is a middling match: the candidate sources already propose items near the user's
known taste (matches of 0.5–0.9), so the slopes act around it.

Reward of a message = clicks + likes. Events are timed after the delivery: open after an
exponential delay (mean `open_delay_min` minutes, shorter when the user is active), each click
two minutes apart after the open, a like or skip three minutes after its click, an unsubscribe
after an exponential delay of `unsub_delay_min`; every time is clipped to before `horizon`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from tagloop.evals.simulate.world import World


@dataclass(frozen=True)
class ResponseModel:
    match_ref: float = 0.5
    open_bias: float = -2.0
    open_match: float = 4.0
    open_activity: float = 1.0
    open_fatigue: float = 0.12
    click_bias: float = -2.5
    click_match: float = 5.0
    like_bias: float = -1.0
    like_match: float = 5.0
    unsub_bias: float = -5.5
    unsub_fatigue: float = 0.2
    unsub_match: float = 5.0
    user_sd: float = 0.5
    open_delay_min: float = 60.0
    unsub_delay_min: float = 30.0


@dataclass
class Deliveries:
    """M delivered messages: user index (M,), slate item indices (M, k) padded with -1, epoch (M,),
    fatigue (M,) and message ids."""

    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    fatigue: np.ndarray
    message_ids: list[str]


@dataclass
class Responses:
    """Per message: opened, clicks, likes, unsubscribed, reward (M,); the events as parallel arrays
    (message row, item index or -1, type, epoch)."""

    opened: np.ndarray
    clicks: np.ndarray
    likes: np.ndarray
    unsubscribed: np.ndarray
    reward: np.ndarray
    event_row: np.ndarray
    event_item: np.ndarray
    event_type: list[str]
    event_ts: np.ndarray


def user_bias(n_users: int, model: ResponseModel, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 2]).normal(0.0, model.user_sd, n_users)


def attention(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(k) + 2.0)


def respond(
    world: World,
    model: ResponseModel,
    d: Deliveries,
    bias: np.ndarray,
    horizon: float,
    rng: np.random.Generator,
) -> Responses:
    """Draw every response to the messages `d` (see the module docstring)."""
    m, k = d.items.shape
    valid = d.items >= 0
    rows, cols = np.nonzero(valid)
    match = np.zeros((m, k))
    match[rows, cols] = world.match(d.users[rows], d.items[rows, cols])
    w = attention(k)[None, :] * valid
    s = (w * match).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)
    hours = world.local_hour(d.users, d.ts)
    activity = world.clock[d.users, hours]

    ds, dm = s - model.match_ref, match - model.match_ref
    p_open = expit(
        model.open_bias
        + model.open_match * ds
        + model.open_activity * activity
        - model.open_fatigue * d.fatigue
        + bias[d.users]
    )
    opened = rng.random(m) < p_open
    p_click = w * expit(model.click_bias + model.click_match * dm)
    clicked = (rng.random((m, k)) < p_click) & opened[:, None] & valid
    liked = clicked & (rng.random((m, k)) < expit(model.like_bias + model.like_match * dm))
    p_unsub = expit(model.unsub_bias + model.unsub_fatigue * d.fatigue - model.unsub_match * ds)
    unsub = rng.random(m) < p_unsub

    open_delay = rng.exponential(model.open_delay_min * 60.0, m) / (0.5 + activity)
    open_ts = d.ts + open_delay
    unsub_ts = d.ts + rng.exponential(model.unsub_delay_min * 60.0, m)
    ev_row: list[np.ndarray] = []
    ev_item: list[np.ndarray] = []
    ev_type: list[str] = []
    ev_ts: list[np.ndarray] = []

    def add(row: np.ndarray, item: np.ndarray, kind: str, ts: np.ndarray) -> None:
        ev_row.append(row)
        ev_item.append(item)
        ev_type.extend([kind] * row.size)
        ev_ts.append(ts)

    o = np.flatnonzero(opened)
    add(o, np.full(o.size, -1), "open", open_ts[o])
    cr, cc = np.nonzero(clicked)
    click_ts = open_ts[cr] + 120.0 * (cc + 1)
    add(cr, d.items[cr, cc], "click", click_ts)
    is_like = liked[cr, cc]
    add(cr[is_like], d.items[cr, cc][is_like], "like", click_ts[is_like] + 180.0)
    add(cr[~is_like], d.items[cr, cc][~is_like], "skip", click_ts[~is_like] + 180.0)
    u = np.flatnonzero(unsub)
    add(u, np.full(u.size, -1), "unsubscribe", unsub_ts[u])

    clicks = clicked.sum(axis=1)
    likes = liked.sum(axis=1)
    return Responses(
        opened=opened,
        clicks=clicks,
        likes=likes,
        unsubscribed=unsub,
        reward=(clicks + likes).astype(np.float64),
        event_row=np.concatenate(ev_row) if ev_row else np.zeros(0, dtype=np.int64),
        event_item=np.concatenate(ev_item) if ev_item else np.zeros(0, dtype=np.int64),
        event_type=ev_type,
        event_ts=np.minimum(np.concatenate(ev_ts), horizon - 1.0) if ev_ts else np.zeros(0),
    )
