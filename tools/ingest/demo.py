"""A seeded generator of a realistic demo catalogue and audience, so `make demo` needs no data set
and no network: hundreds of fine tags in families (microgenre → genre → broad, plus moods, eras and
themes), providers with long-tail (Zipf) popularity, users with taste clusters, IANA time zones,
daily and weekly rhythms, and plays, completes, skips, likes and saves that follow taste."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

GENRES: dict[str, dict[str, list[str]]] = {
    "electronic": {
        "house": ["deep", "acid", "tech", "afro", "progressive"],
        "techno": ["minimal", "dub", "industrial", "melodic", "hard"],
        "ambient": ["dark", "drone", "space", "new-age"],
        "drum-and-bass": ["liquid", "neurofunk", "jungle"],
        "synthwave": ["darksynth", "outrun", "chillwave"],
    },
    "rock": {
        "indie-rock": ["lo-fi", "jangle", "garage"],
        "post-rock": ["cinematic", "math"],
        "shoegaze": ["blackgaze", "nu-gaze", "dream-pop"],
        "punk": ["post-punk", "pop-punk", "hardcore"],
        "psychedelic-rock": ["space-rock", "stoner", "krautrock"],
    },
    "hip-hop": {
        "rap": ["boom-bap", "trap", "drill", "conscious", "cloud-rap"],
        "jazz-rap": ["lo-fi-hip-hop", "abstract"],
        "grime": ["uk-garage", "bassline"],
    },
    "pop": {
        "synth-pop": ["electropop", "dark-synth-pop"],
        "indie-pop": ["bedroom-pop", "twee", "chamber-pop"],
        "k-pop": ["k-indie", "k-rnb"],
        "dance-pop": ["disco-pop", "europop"],
    },
    "jazz": {
        "bebop": ["hard-bop", "post-bop"],
        "jazz-fusion": ["jazz-funk", "nu-jazz"],
        "vocal-jazz": ["swing", "bossa-nova"],
    },
    "metal": {
        "black-metal": ["atmospheric-black-metal", "depressive-black-metal"],
        "doom-metal": ["sludge", "funeral-doom"],
        "death-metal": ["melodic-death-metal", "technical-death-metal"],
    },
    "folk": {
        "indie-folk": ["freak-folk", "chamber-folk"],
        "folk-rock": ["americana", "alt-country"],
        "singer-songwriter": ["acoustic", "anti-folk"],
    },
    "classical": {
        "baroque": ["harpsichord", "early-music"],
        "modern-classical": ["minimalism", "neoclassical"],
        "romantic": ["piano-romantic", "orchestral"],
    },
    "soul": {
        "neo-soul": ["alt-rnb", "quiet-storm"],
        "funk": ["p-funk", "boogie"],
        "rnb": ["contemporary-rnb", "new-jack-swing"],
    },
    "latin": {
        "reggaeton": ["dembow", "latin-trap"],
        "salsa": ["salsa-dura", "boogaloo"],
        "cumbia": ["digital-cumbia", "chicha"],
    },
}
MOODS = [
    "melancholic",
    "euphoric",
    "chill",
    "aggressive",
    "dreamy",
    "romantic",
    "dark",
    "uplifting",
    "nostalgic",
    "energetic",
    "introspective",
    "sensual",
    "playful",
    "hypnotic",
    "epic",
    "calm",
]
ERAS = ["60s", "70s", "80s", "90s", "00s", "10s", "20s"]
THEMES = [
    "night-drive",
    "workout",
    "study",
    "rainy-day",
    "summer",
    "heartbreak",
    "party",
    "sleep",
    "coffee-shop",
    "road-trip",
    "focus",
    "sunday-morning",
    "late-night",
    "gaming",
    "cooking",
]
ZONES = [
    "Europe/London",
    "Europe/Berlin",
    "Europe/Madrid",
    "Europe/Warsaw",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "America/Mexico_City",
    "Asia/Tokyo",
    "Asia/Seoul",
    "Asia/Kolkata",
    "Australia/Sydney",
    "Africa/Lagos",
    "Europe/Stockholm",
]
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "ven",
    "sol",
    "tor",
    "na",
    "el",
    "zu",
    "fa",
    "rin",
    "do",
    "shi",
    "ber",
    "lux",
    "mo",
    "ta",
    "vi",
    "an",
    "or",
    "kai",
    "ne",
    "pa",
    "qu",
    "ix",
    "um",
    "ly",
]


@dataclass(frozen=True)
class DemoSizes:
    users: int = 400
    providers: int = 300
    items: int = 3000
    days: int = 56


def microgenres() -> list[tuple[str, str, str]]:
    """(microgenre, genre, broad) triples of the demo taxonomy."""
    out = []
    for broad, genres in GENRES.items():
        for genre, micros in genres.items():
            out.append((genre, genre, broad))
            out.extend((m if "-" in m or len(m) >= 8 else f"{m}-{genre}", genre, broad) for m in micros)
    return out


def _name(rng: np.random.Generator, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES, size=parts)).capitalize()


def generate(
    out_dir: Path, *, seed: int = 7, sizes: DemoSizes = DemoSizes(), now: datetime | None = None
) -> dict[str, Path]:
    """Write items.jsonl, users.jsonl and events.jsonl into `out_dir`; return their paths."""
    rng = np.random.default_rng(seed)
    now = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    out_dir.mkdir(parents=True, exist_ok=True)
    micro = microgenres()
    n_micro = len(micro)
    # providers: a home microgenre, a mood palette, an era; Zipf popularity
    prov_micro = rng.integers(0, n_micro, sizes.providers)
    prov_moods = [rng.choice(len(MOODS), size=3, replace=False) for _ in range(sizes.providers)]
    prov_era = rng.integers(0, len(ERAS), sizes.providers)
    popularity = 1.0 / np.arange(1, sizes.providers + 1) ** 1.1
    popularity = popularity[rng.permutation(sizes.providers)]
    providers = [
        f"{_name(rng, 2)} {_name(rng, 2)}" if i % 3 else _name(rng, 3) for i in range(sizes.providers)
    ]
    item_provider = rng.choice(sizes.providers, size=sizes.items, p=popularity / popularity.sum())
    items, item_micro, item_moods = [], np.zeros(sizes.items, int), []
    for i in range(sizes.items):
        p = int(item_provider[i])
        m = int(prov_micro[p]) if rng.random() < 0.8 else int(rng.integers(0, n_micro))
        moods = [MOODS[j] for j in prov_moods[p][: int(rng.integers(1, 3))]]
        tags: dict[str, float] = {micro[m][0]: 1.0, micro[m][1]: 0.8, micro[m][2]: 0.5}
        tags.update({mood: 0.6 for mood in moods})
        tags[ERAS[int(prov_era[p])]] = 0.5
        if rng.random() < 0.4:
            tags[str(rng.choice(THEMES))] = 0.4
        created = now - timedelta(days=float(rng.uniform(0, 900 if rng.random() < 0.95 else 7)))
        items.append(
            {
                "id": f"demo-t{i:05d}",
                "title": f"{_name(rng, 2)} {_name(rng, 1)}",
                "kind": "track",
                "provider": providers[p],
                "tags": tags,
                "created_at": created.isoformat(),
                "attributes": {"duration_s": int(rng.integers(120, 420))},
            }
        )
        item_micro[i] = m
        item_moods.append({MOODS.index(x) for x in moods})
    # users: 2–3 liked microgenres (taste cluster around a broad family), a liked mood set
    by_broad: dict[str, list[int]] = {}
    for idx, (_, _, broad) in enumerate(micro):
        by_broad.setdefault(broad, []).append(idx)
    broads = list(by_broad)
    users, events = [], []
    item_pop = popularity[item_provider]
    for u in range(sizes.users):
        uid = f"demo-u{u:04d}"
        zone = str(rng.choice(ZONES))
        home = by_broad[broads[int(rng.integers(0, len(broads)))]]
        liked = set(rng.choice(home, size=min(3, len(home)), replace=False).tolist())
        if rng.random() < 0.5:
            liked.add(int(rng.integers(0, n_micro)))
        liked_moods = set(rng.choice(len(MOODS), size=3, replace=False).tolist())
        users.append(
            {
                "id": uid,
                "timezone": zone,
                "locale": "en",
                "channels": {"file": "inbox", "email": f"{uid}@example.test"},
                "consent": {"file": True, "email": bool(rng.random() < 0.6)},
                "attributes": {"segment": str(rng.choice(["free", "premium"]))},
            }
        )
        affinity = (
            np.array(
                [
                    (2.5 if item_micro[i] in liked else 0.0) + 0.6 * len(item_moods[i] & liked_moods)
                    for i in range(sizes.items)
                ]
            )
            + np.log(item_pop * sizes.providers) * 0.4
        )
        prob = np.exp(affinity - affinity.max())
        prob /= prob.sum()
        peak = int(rng.choice([8, 13, 18, 21, 23]))
        n_sessions = int(rng.integers(6, 30))
        for s in range(n_sessions):
            day = now - timedelta(days=float(rng.uniform(0, sizes.days)))
            local_hour = (peak + int(rng.normal(0, 2))) % 24
            start = day.replace(hour=local_hour)
            if start + timedelta(hours=1) > now:  # a session later today would end in the future
                start -= timedelta(days=1)
            for j, i in enumerate(rng.choice(sizes.items, size=int(rng.integers(3, 12)), p=prob)):
                i = int(i)
                ts = (start + timedelta(minutes=4 * j)).isoformat()
                match = item_micro[i] in liked
                etype = (
                    "complete" if match and rng.random() < 0.7 else "play" if rng.random() < 0.6 else "skip"
                )
                base = {
                    "user_id": uid,
                    "item_id": items[i]["id"],
                    "ts": ts,
                    "context": {
                        "device": str(rng.choice(["mobile", "desktop", "speaker"], p=[0.6, 0.3, 0.1])),
                        "source": str(rng.choice(["playlist", "search", "radio"])),
                    },
                }
                events.append({"id": f"demo-e{u}-{s}-{j}", "type": etype, "value": 1.0, **base})
                if match and rng.random() < 0.15:
                    events.append(
                        {
                            "id": f"demo-e{u}-{s}-{j}-l",
                            "type": str(rng.choice(["like", "save", "add_to_playlist"])),
                            **base,
                        }
                    )
    paths = {
        "items": out_dir / "items.jsonl",
        "users": out_dir / "users.jsonl",
        "events": out_dir / "events.jsonl",
    }
    for kind, rows in (("items", items), ("users", users), ("events", events)):
        with paths[kind].open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    return paths
