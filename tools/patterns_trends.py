"""Trending tags and items with an estimate of each trend's lifetime (rise, peak, decay).

`trending(conn, level=…)` counts positive events per tag (or item) and 24-hour window over the last
`days` days in one SQL statement, then `fit_lifetime` describes each daily series (numpy):
- baseline b: the median of the first `baseline_days` days; excess e_t = max(c_t − b, 0);
- peak: the day of the largest 3-day moving average of the excess. A peak under `NOISE_SD` (3)
  standard deviations of a 3-day mean of Poisson counts around the baseline, 3·sqrt((b + 1)/3)
  (2-day means at either end of the series), is noise, not a trend: no rise, no decay (phase
  `steady` or `over`);
- rise rate r (per day): least-squares slope of log(1 + e_t) from the onset (the last day before
  the peak with excess under 10 % of the peak's, or the first day) to the peak;
- decay rate λ (per day): minus the slope of log(1 + e_t) after the peak when there are ≥ 3 days
  from the peak on, else assumed equal to r (`decay_observed` False): trends fall about as fast as
  they rose. A rate counts as observed only when its half-life fits in the series
  (rate ≥ ln 2 / days); a rise below that is no rise, a decay below that is not observed;
- phase: `rising` (peak within the last 2 days and a rise), `peaking` (current excess ≥ 70 % of a
  peak that rose), `decaying` (a known decay λ, current excess between 10 % and 70 % of the
  peak), `over` (current excess < 10 % of the peak, or no excess at all), else `steady`: the
  level moves without a rise or decay to measure (noise around the baseline), not a trend, so it
  has no lifetime or days left;
- `days_left`: until today's excess e_now decays below 10 % of the peak, ln(e_now / 0.1·peak)/λ;
  lifetime: days from the onset to that point, (today − onset) + days_left (for a trend that is
  over: (peak − onset) + ln(10)/λ); half-life ln(2)/λ. With neither an observed rise nor an
  observed decay, λ is unknown and so are these (None, null in JSON; never a made-up rate).
Trends are ranked by `score` = mean of the last 3 days / (baseline + 1), real trends (rising,
peaking, decaying) before noise (`steady`) and ended ones (a tag with 0-3 events a day and no
baseline outscored every tag with a measured rise or decay), rising ones first among equals;
keys with fewer than `min_events` events in the window are ignored. The days are whole 24-hour
windows ending at `now` (`daily_counts`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import numpy as np
import psycopg
from psycopg import sql

from tagloop.tools.errors import InvalidInput
from tagloop.tools.patterns import POSITIVE, Level

Phase = Literal["rising", "peaking", "decaying", "steady", "over"]
PHASE_ORDER = {"rising": 0, "peaking": 1, "decaying": 2, "steady": 3, "over": 4}
TREND_PHASES = frozenset({"rising", "peaking", "decaying"})
FADED = 0.1
NOISE_SD = 3.0  # a peak must stand this many standard deviations above the baseline's noise


@dataclass(frozen=True)
class Lifetime:
    phase: Phase
    baseline: float
    peak_day: int  # index into the series
    peak: float  # excess at the peak (3-day mean)
    rise_per_day: float
    decay_per_day: float | None  # None: no observed rise or decay to estimate it from
    decay_observed: bool
    half_life_days: float | None
    lifetime_days: float | None
    days_left: float | None
    score: float


@dataclass(frozen=True)
class Trend:
    key: str
    lifetime: Lifetime
    peak_date: date
    daily: list[int]


def _slope(y: np.ndarray) -> float:
    if y.size < 2:
        return 0.0
    x = np.arange(y.size, dtype=np.float64)
    return float(np.polyfit(x, y, 1)[0])


def fit_lifetime(counts: np.ndarray, *, baseline_days: int = 7) -> Lifetime:
    """Describe one daily count series (oldest first) as in the module docstring."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size < 3:
        raise InvalidInput("a trend needs a daily series of at least 3 days")
    base = float(np.median(c[: max(1, min(baseline_days, c.size // 2))]))
    excess = np.maximum(c - base, 0.0)
    window = np.ones(3)
    days_in_mean = np.convolve(np.ones_like(excess), window, mode="same")  # 2 at either end
    smooth = np.convolve(excess, window, mode="same") / days_in_mean
    peak_day = int(np.argmax(smooth))
    peak = float(smooth[peak_day])
    last = c.size - 1
    score = float(c[-3:].mean() / (base + 1.0))
    if peak <= 0:
        return Lifetime("over", base, peak_day, 0.0, 0.0, None, False, None, None, 0.0, score)
    onset = peak_day
    while onset > 0 and excess[onset - 1] >= FADED * peak:
        onset -= 1
    onset = max(onset - 1, 0)  # the last day under 10 % of the peak: a jump in one day is a rise
    logs = np.log1p(excess)
    min_rate = math.log(2) / c.size  # a slower rate has a half-life longer than the series
    signal = peak >= NOISE_SD * math.sqrt((base + 1.0) / days_in_mean[peak_day])  # else Poisson noise
    rise = max(_slope(logs[onset : peak_day + 1]), 0.0) if signal else 0.0
    rose = rise >= min_rate
    after = logs[peak_day:]
    fall = -_slope(after) if after.size >= 3 and signal else 0.0
    observed = fall >= min_rate
    decay = fall if observed else rise if rose else None
    current = float(smooth[-1])
    phase: Phase
    if peak_day >= last - 1 and rose:
        phase = "rising"
    elif current >= 0.7 * peak:
        phase = "peaking" if rose else "steady"
    elif current < FADED * peak:
        phase = "over"
    else:
        phase = "decaying" if decay is not None else "steady"
    if decay is None:
        left_if_over = 0.0 if phase == "over" else None
        return Lifetime(phase, base, peak_day, peak, rise, None, False, None, None, left_if_over, score)
    half_life = math.log(2) / decay
    if phase == "steady":  # no trend to outlive: a rate, but no lifetime
        return Lifetime(phase, base, peak_day, peak, rise, decay, observed, half_life, None, None, score)
    if phase == "over":
        left, life = 0.0, (peak_day - onset) + math.log(1.0 / FADED) / decay
    else:
        left = max(math.log(max(current, 1e-12) / (FADED * peak)), 0.0) / decay
        life = (last - onset) + left
    return Lifetime(phase, base, peak_day, peak, rise, decay, observed, half_life, life, left, score)


# `ago`: whole 24-hour windows before `now` (0: the last 24 hours)
_AGO = "floor(extract(epoch from (%(now)s - e.ts)) / 86400)::int"
_DAILY_ITEMS = f"""
select e.item_id as key, {_AGO} as ago, count(*) as n from events e
where e.type = any(%(pos)s) and e.item_id is not null and e.ts > %(since)s and e.ts <= %(now)s
group by 1, 2
"""

_DAILY_TAGS = f"""
select t.name as key, {_AGO} as ago, count(*) as n from events e
join item_tags it on it.item_id = e.item_id and it.confidence >= 0.5
join tags t on t.id = it.tag_id
where e.type = any(%(pos)s) and e.ts > %(since)s and e.ts <= %(now)s
group by 1, 2
"""


def daily_counts(
    conn: psycopg.Connection[Any], *, now: datetime, level: Level = "tag", days: int = 28
) -> tuple[list[str], list[date], np.ndarray]:
    """(keys, days oldest first, keys × days counts) of positive events in the last `days` days:
    whole 24-hour windows ending at `now`, each labelled with the UTC date it ends on. (Calendar
    days made the day in progress a partial one: an hour after midnight every rising tag read as
    decaying.)"""
    if now.tzinfo is None:
        raise InvalidInput("now must be timezone-aware")
    since = now - timedelta(days=days)
    query = sql.SQL(_DAILY_ITEMS if level == "item" else _DAILY_TAGS)
    rows = conn.execute(query, {"pos": POSITIVE, "since": since, "now": now}).fetchall()
    keys = sorted({r["key"] for r in rows})
    index = {key: n for n, key in enumerate(keys)}
    matrix = np.zeros((len(keys), days), dtype=np.int64)
    for r in rows:
        d = days - 1 - int(r["ago"])
        if 0 <= d < days:
            matrix[index[r["key"]], d] += int(r["n"])
    ends = [(now - timedelta(days=days - 1 - d)).astimezone(UTC).date() for d in range(days)]
    return keys, ends, matrix


def trending(
    conn: psycopg.Connection[Any],
    *,
    now: datetime,
    level: Level = "tag",
    days: int = 28,
    k: int = 20,
    min_events: int = 10,
    include_over: bool = False,
) -> list[Trend]:
    """The `k` strongest current trends with their lifetime estimates (module docstring)."""
    keys, day_list, matrix = daily_counts(conn, now=now, level=level, days=days)
    found = []
    for key, row in zip(keys, matrix, strict=True):
        if row.sum() < min_events:
            continue
        life = fit_lifetime(row)
        if life.phase == "over" and not include_over:
            continue
        found.append(Trend(key, life, day_list[life.peak_day], [int(x) for x in row]))
    found.sort(
        key=lambda t: (
            t.lifetime.phase not in TREND_PHASES,  # noise ('steady') and ended trends after real ones
            -round(t.lifetime.score, 6),
            PHASE_ORDER[t.lifetime.phase],
            t.key,
        )
    )
    return found[:k]
