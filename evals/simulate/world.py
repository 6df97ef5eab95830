"""The simulated world: real Last.fm users with a true taste the agent only partly sees.

`build_world(lastfm_dir, cfg, work_dir)` runs tagloop's own Last.fm converter
(`tools.ingest.lastfm.convert`), samples `cfg.users` users (seeded, among those with at least
`MIN_ARTISTS` artists) and splits each user's artists: a seeded `observed_share` becomes the history
the agent is given (their play/save events), the rest stays hidden. The user's true taste is the
whole profile:

- `taste[u, i]` = 0.5 + 0.5 · log(1 + listens) / log(1 + the user's max listens) for every artist
  the user listened to (0 elsewhere);
- `user_tags[u]` = the L2-normalised tag mix of that taste (Σ_i taste[u, i] · tags_i);
- `match(u, i)` = max(taste[u, i], cos(user_tags[u], tags_i)) ∈ [0, 1] — a hidden favourite counts
  fully, an unknown artist by how well its tags fit;
- `clock[u, h]` = activity at local hour h (max 1), from the hours of all the user's plays.

Items are artists (each its own provider) created a year before the simulation starts; users get
the simulated channel (`cfg.channel`, consented). The long tail is fixed from the full data set's
listener counts (`policies.long_tail_providers`, head = 80% of listeners), so every policy is
measured against the same definition.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import scipy.sparse as sp

from tagloop.policies import long_tail_providers
from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.lastfm import convert

SIM_VERSION = "2"  # 2: the Last.fm converter no longer writes events after `until`
MIN_ARTISTS = 10
START = datetime(2026, 1, 5, 6, tzinfo=UTC)  # a Monday, 06:00 UTC: the first daily run


@dataclass(frozen=True)
class WorldConfig:
    users: int
    seed: int
    observed_share: float = 0.5
    history_days: int = 180
    channel: str = "push"
    start: datetime = START
    max_items: int | None = None  # a smaller catalogue (tests): the users' artists plus a seeded sample

    def __post_init__(self) -> None:
        if self.users < 1:
            raise InvalidInput(f"--users must be at least 1, got {self.users}")
        if self.max_items is not None and self.max_items < 1:
            raise InvalidInput(f"--catalogue must be at least 1 item, got {self.max_items}")

    def key(self) -> str:
        """Identifies the world's database contents (the template cache key); `max_items` is None
        (the full catalogue) or a positive size, the same test `build_world` makes."""
        items = "all" if self.max_items is None else str(self.max_items)
        return f"v{SIM_VERSION}-u{self.users}-s{self.seed}-o{self.observed_share:g}-{self.channel}-i{items}"


@dataclass
class World:
    config: WorldConfig
    item_ids: list[str]
    providers: list[str]
    item_tags: sp.csr_matrix
    user_ids: list[str]
    zones: list[str]
    taste: sp.csr_matrix
    observed: sp.csr_matrix
    user_tags: sp.csr_matrix
    clock: np.ndarray
    long_tail: np.ndarray
    files: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.item_index = {i: n for n, i in enumerate(self.item_ids)}
        self.user_index = {u: n for n, u in enumerate(self.user_ids)}
        self.utc_offset_h = np.array([_offset_hours(z, self.config.start) for z in self.zones])

    def match(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """match(u, i) for paired index arrays (see the module docstring), shape (n,)."""
        if users.size == 0:
            return np.zeros(0)
        cos = np.asarray(self.user_tags[users].multiply(self.item_tags[items]).sum(axis=1)).ravel()
        known = np.asarray(self.taste[users, items]).ravel()
        return np.clip(np.maximum(known, cos), 0.0, 1.0)

    def local_hour(self, users: np.ndarray, ts_epoch: np.ndarray) -> np.ndarray:
        """Local wall-clock hour of each event (zone offset at the start; DST shifts ignored)."""
        return ((ts_epoch / 3600.0 + self.utc_offset_h[users]) % 24).astype(np.int64)


def _offset_hours(zone: str, at: datetime) -> float:
    offset = at.astimezone(ZoneInfo(zone)).utcoffset()
    return offset.total_seconds() / 3600.0 if offset else 0.0


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    with path.open("rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


def fingerprint(lastfm_dir: Path) -> str:
    """Sizes and modification times of the data files (a changed data set means a new world)."""
    files = sorted(lastfm_dir.glob("*.dat"))
    parts = [f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in files]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:10]


def _converted(lastfm_dir: Path, cfg: WorldConfig, work_dir: Path, cache_dir: Path | None) -> dict[str, Path]:
    """`convert`'s output, reused from `cache_dir` when an earlier run left it complete there."""
    if cache_dir is None:
        return convert(lastfm_dir, work_dir / "lastfm", seed=cfg.seed, until=cfg.start, days=cfg.history_days)
    out = cache_dir / f"lastfm-{fingerprint(lastfm_dir)}-s{cfg.seed}-d{cfg.history_days}-v{SIM_VERSION}"
    paths = {k: out / f"{k}.jsonl" for k in ("items", "users", "events")}
    if not (out / "complete").exists():
        paths = convert(lastfm_dir, out, seed=cfg.seed, until=cfg.start, days=cfg.history_days)
        (out / "complete").write_text("ok\n", encoding="utf-8")
    return paths


def build_world(lastfm_dir: Path, cfg: WorldConfig, work_dir: Path, cache_dir: Path | None = None) -> World:
    """Convert, sample and split (module docstring); writes the import files under `work_dir`
    (the converted data set is kept in `cache_dir`, when given, for the next run)."""
    rng = np.random.default_rng([cfg.seed, 1])
    raw = _converted(lastfm_dir, cfg, work_dir, cache_dir)
    items = _read_jsonl(raw["items"])
    listens: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    events = _read_jsonl(raw["events"])
    for e in events:
        if e["type"] == "play":
            listens[str(e["user_id"])][str(e["item_id"])] += float(e["value"])  # type: ignore[arg-type]
    eligible = sorted((u for u, a in listens.items() if len(a) >= MIN_ARTISTS), key=int)
    if cfg.users > len(eligible):
        raise InvalidInput(
            f"--users {cfg.users}: the Last.fm data has only {len(eligible)} users "
            f"with ≥ {MIN_ARTISTS} artists"
        )
    users = sorted(rng.choice(eligible, size=cfg.users, replace=False).tolist(), key=int)
    zones_all = {str(r["id"]): str(r["timezone"]) for r in _read_jsonl(raw["users"])}
    if cfg.max_items is not None and cfg.max_items < len(items):
        items = _smaller_catalogue(items, {a for u in users for a in listens[u]}, cfg.max_items, rng)
    item_ids = [str(r["id"]) for r in items]
    index = {i: n for n, i in enumerate(item_ids)}

    rows, cols, vals, obs_rows, obs_cols = [], [], [], [], []
    observed_pairs: set[tuple[str, str]] = set()
    for u_n, u in enumerate(users):
        artists = sorted(listens[u], key=int)
        counts = np.log1p(np.array([listens[u][a] for a in artists]))
        weights = 0.5 + 0.5 * counts / max(counts.max(), 1e-9)
        order = rng.permutation(len(artists))
        n_obs = max(1, round(cfg.observed_share * len(artists)))
        for j, a in enumerate(artists):
            rows.append(u_n)
            cols.append(index[a])
            vals.append(float(weights[j]))
        for j in order[:n_obs]:
            obs_rows.append(u_n)
            obs_cols.append(index[artists[j]])
            observed_pairs.add((u, artists[j]))
    shape = (len(users), len(item_ids))
    taste = sp.csr_matrix((vals, (rows, cols)), shape=shape)
    observed = sp.csr_matrix((np.ones(len(obs_rows)), (obs_rows, obs_cols)), shape=shape)
    item_tags = _tag_matrix(items)
    user_tags = _normalise_rows(sp.csr_matrix(taste @ item_tags))

    providers = [str(r.get("provider") or f"artist-{r['id']}") for r in items]
    provider_of = dict(zip(item_ids, providers, strict=True))
    popularity = dict.fromkeys(providers, 0.0)
    for heard in listens.values():
        for a in heard:
            if a in provider_of:
                popularity[provider_of[a]] += 1.0
    tail = long_tail_providers(popularity, 0.8)

    world = World(
        config=cfg,
        item_ids=item_ids,
        providers=providers,
        item_tags=item_tags,
        user_ids=users,
        zones=[zones_all[u] for u in users],
        taste=taste,
        observed=observed,
        user_tags=user_tags,
        clock=np.zeros((len(users), 24)),
        long_tail=np.array([p in tail for p in providers]),
    )
    world.clock = _clock(world, [e for e in events if str(e["user_id"]) in world.user_index])
    world.files = _write_files(world, items, events, observed_pairs, work_dir)
    return world


def _smaller_catalogue(
    items: list[dict[str, object]], needed: set[str], size: int, rng: np.random.Generator
) -> list[dict[str, object]]:
    """The artists in `needed` plus a seeded sample of the others, `size` in all (file order)."""
    others = [n for n, r in enumerate(items) if str(r["id"]) not in needed]
    fill = max(size - (len(items) - len(others)), 0)
    keep = set(rng.choice(others, size=min(fill, len(others)), replace=False).tolist())
    return [r for n, r in enumerate(items) if str(r["id"]) in needed or n in keep]


def _tag_matrix(items: list[dict[str, object]]) -> sp.csr_matrix:
    names: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for n, r in enumerate(items):
        tags = r.get("tags") or {}
        assert isinstance(tags, dict)
        for t, w in tags.items():
            rows.append(n)
            cols.append(names.setdefault(str(t), len(names)))
            vals.append(float(w))
    m = sp.csr_matrix((vals, (rows, cols)), shape=(len(items), max(len(names), 1)))
    return _normalise_rows(m)


def _normalise_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ m)


def _clock(world: World, events: list[dict[str, object]]) -> np.ndarray:
    """(N, 24) activity per local hour, circularly smoothed, max 1."""
    users = np.array([world.user_index[str(e["user_id"])] for e in events], dtype=np.int64)
    ts = np.array([datetime.fromisoformat(str(e["ts"])).timestamp() for e in events])
    hist = np.ones((len(world.user_ids), 24))
    if users.size:
        np.add.at(hist, (users, world.local_hour(users, ts)), 1.0)
    smooth = 0.5 * hist + 0.25 * np.roll(hist, 1, axis=1) + 0.25 * np.roll(hist, -1, axis=1)
    return smooth / smooth.max(axis=1, keepdims=True)


def _write_files(
    world: World,
    items: list[dict[str, object]],
    events: list[dict[str, object]],
    observed_pairs: set[tuple[str, str]],
    work_dir: Path,
) -> dict[str, Path]:
    """items (created a year before the start), the sampled users, their observed events."""
    created = (world.config.start - timedelta(days=365)).isoformat()
    paths = {k: work_dir / f"sim_{k}.jsonl" for k in ("items", "users", "events")}
    with paths["items"].open("w", encoding="utf-8") as fh:
        for r in items:
            fh.write(json.dumps({**r, "created_at": created}) + "\n")
    ch = world.config.channel
    with paths["users"].open("w", encoding="utf-8") as fh:
        for u, z in zip(world.user_ids, world.zones, strict=True):
            fh.write(
                json.dumps({"id": u, "timezone": z, "channels": {ch: f"sim:{u}"}, "consent": {ch: True}})
                + "\n"
            )
    with paths["events"].open("w", encoding="utf-8") as fh:
        for e in events:
            if (str(e["user_id"]), str(e["item_id"])) in observed_pairs:
                fh.write(json.dumps(e) + "\n")
    return paths


def as_utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
