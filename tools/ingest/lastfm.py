"""Turning HetRec 2011 Last.fm-2k into tagloop's import formats.

Artists become items (kind "artist", each its own provider) with the tags users applied to them,
weighted by how many distinct users applied each (scaled into (0, 1]). Users get a seeded IANA
time zone (the data set has none) and the `file` channel. Listen counts have no timestamps: each
(user, artist) count is spread over up to 5 play events at seeded times in the `days` before
`until`, in a daily rhythm in the user's zone. A user tagging an artist becomes a `save` event at
the tagging date, shifted so the newest tagging date falls on `until`.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.demo import ZONES
from tagloop.tools.tagging_names import normalize_tag

REQUIRED = ("artists.dat", "tags.dat", "user_artists.dat", "user_taggedartists.dat")


def _rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader, None)
        return [row for row in reader if row]


def convert(
    src: Path, out_dir: Path, *, seed: int = 7, until: datetime | None = None, days: int = 180
) -> dict[str, Path]:
    missing = [name for name in REQUIRED if not (src / name).exists()]
    if missing:
        raise InvalidInput(f"{src}: not a HetRec Last.fm-2k directory (missing {', '.join(missing)})")
    rng = np.random.default_rng(seed)
    until = (until or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    out_dir.mkdir(parents=True, exist_ok=True)
    artists = {r[0]: r for r in _rows(src / "artists.dat")}
    tag_names = {r[0]: r[1] for r in _rows(src / "tags.dat")}
    applied: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    tagged: dict[tuple[str, str], datetime] = {}
    for user, artist, tag, day, month, year in _rows(src / "user_taggedartists.dat"):
        if artist in artists and tag in tag_names:
            applied[artist][tag_names[tag]].add(user)
            try:
                when = datetime(int(year), int(month), int(day), 12, tzinfo=UTC)
            except ValueError:
                continue
            if (user, artist) not in tagged or when < tagged[(user, artist)]:
                tagged[(user, artist)] = when
    paths = {k: out_dir / f"{k}.jsonl" for k in ("items", "users", "events")}
    with paths["items"].open("w", encoding="utf-8") as fh:
        for aid, (_, name, url, *_rest) in artists.items():
            counts = {t: len(us) for t, us in applied.get(aid, {}).items()}
            top = max(counts.values(), default=1)
            tags = {t: round(max(c / top, 0.01), 4) for t, c in counts.items() if normalize_tag(t)}
            fh.write(
                json.dumps(
                    {
                        "id": aid,
                        "title": name,
                        "kind": "artist",
                        "provider": f"artist-{aid}",
                        "tags": tags,
                        "attributes": {"url": url},
                    }
                )
                + "\n"
            )
    listens = _rows(src / "user_artists.dat")
    user_ids = sorted({r[0] for r in listens}, key=int)
    zones = {u: str(rng.choice(ZONES)) for u in user_ids}
    with paths["users"].open("w", encoding="utf-8") as fh:
        for u in user_ids:
            fh.write(
                json.dumps(
                    {"id": u, "timezone": zones[u], "channels": {"file": "inbox"}, "consent": {"file": True}}
                )
                + "\n"
            )
    shift = until - max(tagged.values(), default=until)
    peak = {u: int(rng.integers(0, 24)) for u in user_ids}
    with paths["events"].open("w", encoding="utf-8") as fh:
        for user, artist, weight in listens:
            if artist not in artists:
                continue
            count = float(weight)
            n = max(1, min(5, int(math.log10(count + 1))))
            for j in range(n):
                offset = timedelta(days=float(rng.uniform(0, days)), hours=float(rng.normal(0, 2.5)))
                ts = (until - offset).replace(hour=peak[user]) if j % 2 else until - offset
                if ts > until:  # the jitter or the peak hour went past `until`: the day before
                    ts -= timedelta(days=math.ceil((ts - until) / timedelta(days=1)))
                fh.write(
                    json.dumps(
                        {
                            "id": f"lfm-p-{user}-{artist}-{j}",
                            "user_id": user,
                            "type": "play",
                            "item_id": artist,
                            "ts": ts.isoformat(),
                            "value": round(count / n, 3),
                        }
                    )
                    + "\n"
                )
        for (user, artist), when in tagged.items():
            if user in zones:
                fh.write(
                    json.dumps(
                        {
                            "id": f"lfm-s-{user}-{artist}",
                            "user_id": user,
                            "type": "save",
                            "item_id": artist,
                            "ts": (when + shift).isoformat(),
                        }
                    )
                    + "\n"
                )
    return paths
