"""Turning HetRec 2011 Last.fm-2k into tagloop's import formats.

Artists become items (kind "artist", each its own provider) with the tags users applied to them,
weighted by how many distinct users applied each (scaled into (0, 1]). Users get a seeded IANA
time zone (the data set has none) and the `file` channel. Listen counts have no timestamps: each
(user, artist) count is spread over up to 5 play events at seeded times in the `days` before
`until`, in a daily rhythm in the user's zone. A user tagging an artist becomes a `save` event at
the tagging date, shifted so the newest tagging date falls on `until`.

The official download ships tags.dat in ISO-8859-1: it is read as such when it is not UTF-8 (a
re-encoded copy works too). Malformed input stops the conversion with `InvalidInput` naming the
file and line: bytes that are not UTF-8 in the other files, a row with too few columns, an id that
is not a number, a listen count that is not a finite number ≥ 0. Rows that are well formed but name
an artist or tag missing from artists.dat or tags.dat are skipped (the published
user_taggedartists.dat holds 1,538 such rows).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.demo import ZONES
from tagloop.tools.ingest.readers import not_utf8
from tagloop.tools.tagging_names import normalize_tag

REQUIRED = ("artists.dat", "tags.dat", "user_artists.dat", "user_taggedartists.dat")


def _rows(path: Path, columns: int, ids: int, *, latin1: bool = False) -> list[tuple[int, list[str]]]:
    """(line number, row) for each data row of a tab-separated file with a header; every row has
    at least `columns` fields and its first `ids` fields are whole numbers (InvalidInput if not).
    `latin1`: a file that is not UTF-8 is read as ISO-8859-1, the encoding the official download
    ships it in (tags.dat)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not latin1:
            raise not_utf8(path, data.count(b"\n", 0, exc.start) + 1, data[exc.start]) from None
        text = data.decode("iso-8859-1")  # every byte is a character: never fails
    reader = csv.reader(
        io.StringIO(text.removeprefix("\ufeff"), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE
    )
    header = next(reader, None)
    names = header or []
    out = []
    for row in reader:
        if not row:
            continue
        line = reader.line_num
        if len(row) < columns:
            raise InvalidInput(f"{path}:{line}: expected {columns} tab-separated columns, got {len(row)}")
        for n in range(ids):
            if not (row[n].strip().isascii() and row[n].strip().isdigit()):
                name = names[n] if n < len(names) else f"column {n + 1}"
                raise InvalidInput(f"{path}:{line}: {name} must be a whole number, got {row[n]!r}")
        out.append((line, [row[n].strip() if n < ids else row[n] for n in range(len(row))]))
    return out


def _listen_count(path: Path, line: int, text: str) -> float:
    try:
        count = float(text)
    except ValueError:
        count = math.nan
    if not math.isfinite(count) or count < 0:
        raise InvalidInput(f"{path}:{line}: weight must be a listen count ≥ 0, got {text!r}")
    return count


def _output_dir(out_dir: Path) -> None:
    """Create `out_dir` (or accept an existing directory) before any work; InvalidInput if it cannot
    hold the converted files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"--out {out_dir}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"--out {out_dir}: cannot create the directory ({exc.strerror or exc})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise InvalidInput(f"--out {out_dir}: the directory is not writable")
    for name in ("items", "users", "events"):
        if (out_dir / f"{name}.jsonl").is_dir():
            raise InvalidInput(f"--out {out_dir}: {name}.jsonl there is a directory")


def convert(
    src: Path, out_dir: Path, *, seed: int = 7, until: datetime | None = None, days: int = 180
) -> dict[str, Path]:
    missing = [name for name in REQUIRED if not (src / name).exists()]
    if missing:
        raise InvalidInput(f"{src}: not a HetRec Last.fm-2k directory (missing {', '.join(missing)})")
    rng = np.random.default_rng(seed)
    until = (until or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    _output_dir(out_dir)
    artists = {r[0]: r for _, r in _rows(src / "artists.dat", 2, 1)}
    tag_names = {r[0]: r[1] for _, r in _rows(src / "tags.dat", 2, 1, latin1=True)}
    applied: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    tagged: dict[tuple[str, str], datetime] = {}
    for _, (user, artist, tag, day, month, year, *_) in _rows(src / "user_taggedartists.dat", 6, 3):
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
        for aid, (_, name, *rest) in artists.items():
            url = rest[0] if rest else ""
            counts = {t: len(us) for t, us in applied.get(aid, {}).items()}
            top = max(counts.values(), default=1)
            tags = {t: round(max(c / top, 0.01), 4) for t, c in counts.items() if normalize_tag(t)}
            fh.write(
                json.dumps(
                    {
                        "id": aid,
                        "title": name,
                        "kind": "artist",
                        # the artist is its own provider, named as people know it ("new from
                        # Duran Duran", not "artist-51"); names are unique in artists.dat
                        "provider": name if name.strip() and len(name) <= 256 else f"artist-{aid}",
                        "tags": tags,
                        "attributes": {"url": url},
                    }
                )
                + "\n"
            )
    listens_path = src / "user_artists.dat"
    listens = [(r[0], r[1], _listen_count(listens_path, line, r[2])) for line, r in _rows(listens_path, 3, 2)]
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
        for user, artist, count in listens:
            if artist not in artists:
                continue
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
