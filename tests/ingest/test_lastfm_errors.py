"""`tagloop import lastfm` on malformed HetRec files: one clear error naming the file and line (bytes
that are not UTF-8, a negative or non-numeric listen count, an id that is not a number) and an
--out that cannot hold the converted files is refused before any work, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.lastfm import convert
from tagloop.tools.store.runs import request_unsubscribes

UNTIL = datetime(2026, 3, 1, tzinfo=UTC)
FILES = {
    "artists.dat": "id\tname\turl\tpictureURL\n1\tMALICE MIZER\thttp://a/1\t\n2\tDiary of Dreams\thttp://a/2\t\n",
    "tags.dat": "tagID\ttagValue\n1\tmetal\n2\tgothic\n",
    "user_artists.dat": "userID\tartistID\tweight\n2\t1\t13883\n2\t2\t11\n3\t2\t0\n",
    "user_taggedartists.dat": (
        "userID\tartistID\ttagID\tday\tmonth\tyear\n2\t1\t1\t1\t4\t2009\n2\t99\t2\t1\t4\t2009\n"
    ),
}


def hetrec(tmp_path: Path, **replace: bytes) -> Path:
    src = tmp_path / "lastfm"
    src.mkdir()
    for name, text in FILES.items():
        (src / name).write_bytes(replace.get(name.replace(".dat", ""), text.encode("utf-8")))
    return src


def test_a_well_formed_directory_converts(tmp_path: Path) -> None:
    paths = convert(hetrec(tmp_path), tmp_path / "out", until=UNTIL)
    events = [json.loads(x) for x in paths["events"].read_text(encoding="utf-8").splitlines()]
    assert {e["item_id"] for e in events if e["type"] == "play"} == {"1", "2"}
    assert [e["item_id"] for e in events if e["type"] == "save"] == ["1"]  # artist 99 is unknown: skipped
    # each artist is its own provider, named as people know it (explanations: "new from MALICE MIZER")
    items = [json.loads(x) for x in paths["items"].read_text(encoding="utf-8").splitlines()]
    assert [(i["id"], i["provider"]) for i in items] == [("1", "MALICE MIZER"), ("2", "Diary of Dreams")]


def test_latin1_bytes_name_the_file_and_line(tmp_path: Path) -> None:
    src = hetrec(tmp_path, artists=FILES["artists.dat"].replace("Diary", "Caf\xe9").encode("latin-1"))
    with pytest.raises(InvalidInput, match=r"artists\.dat:3: the file is not UTF-8 \(byte 0xe9\)"):
        convert(src, tmp_path / "out", until=UNTIL)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2\t1\t-5", r"user_artists\.dat:3: weight must be a listen count ≥ 0, got '-5'"),
        ("2\t1\tlots", r"user_artists\.dat:3: weight must be a listen count ≥ 0, got 'lots'"),
        ("2\t1\tnan", r"user_artists\.dat:3: weight must be a listen count ≥ 0"),
        ("2\tabc\t10", r"user_artists\.dat:3: artistID must be a whole number, got 'abc'"),
        ("x\t1\t10", r"user_artists\.dat:3: userID must be a whole number, got 'x'"),
        ("2\t1", r"user_artists\.dat:3: expected 3 tab-separated columns, got 2"),
    ],
)
def test_bad_listen_rows_name_the_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    text = "userID\tartistID\tweight\n2\t2\t11\n" + row + "\n"
    with pytest.raises(InvalidInput, match=message):
        convert(hetrec(tmp_path, user_artists=text.encode()), tmp_path / "out", until=UNTIL)


def test_a_non_numeric_artist_id_in_artists_is_reported(tmp_path: Path) -> None:
    src = hetrec(tmp_path, artists=b"id\tname\turl\tpictureURL\n1\tA\tu\t\nB2\tB\tu\t\n")
    with pytest.raises(InvalidInput, match=r"artists\.dat:3: id must be a whole number, got 'B2'"):
        convert(src, tmp_path / "out", until=UNTIL)


def test_an_out_that_cannot_hold_the_files_is_refused_before_reading(tmp_path: Path) -> None:
    src = hetrec(tmp_path, artists=b"\xff")  # reading it would fail: the --out check comes first
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    with pytest.raises(InvalidInput, match="exists and is not a directory"):
        convert(src, afile, until=UNTIL)
    with pytest.raises(InvalidInput, match="cannot create the directory"):
        convert(src, afile / "sub", until=UNTIL)


def _import_lastfm(src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """`tagloop import lastfm SRC --out OUT` in a process of its own."""
    tagloop = Path(sys.executable).parent / "tagloop"
    return subprocess.run(
        [str(tagloop), "import", "lastfm", str(src), "--out", str(out)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )


def test_the_cli_prints_one_error_line(tagloop_env: Path, tmp_path: Path) -> None:
    src = hetrec(tmp_path, user_artists=b"userID\tartistID\tweight\n2\t1\t-1\n")
    done = _import_lastfm(src, tmp_path / "out")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("error: ") and "user_artists.dat:2:" in done.stderr


def test_the_cli_prints_a_readable_summary(tagloop_env: Path, tmp_path: Path) -> None:
    src = hetrec(tmp_path)
    done = _import_lastfm(src, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "users: 2 stored from 2 line(s)"
    assert lines[1] == "items: 2 stored from 2 line(s)"
    assert lines[2].startswith("events: ") and ", 0 duplicate(s) skipped" in lines[2]
    assert lines[3] == "profiles: 2 rebuilt" and "{" not in done.stdout


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8"])
def test_tags_dat_as_the_official_download_ships_it_in_latin1_or_re_encoded(
    tmp_path: Path, encoding: str
) -> None:
    """The official zip has tags.dat in ISO-8859-1 (accented tags such as 'música'); a copy re-encoded
    to UTF-8 (as ../shared/data has it) gives the same tags."""
    tags = FILES["tags.dat"].replace("metal", "m\xfasica electr\xf3nica").encode(encoding)
    paths = convert(hetrec(tmp_path, tags=tags), tmp_path / "out", until=UNTIL)
    items = [json.loads(x) for x in paths["items"].read_text(encoding="utf-8").splitlines()]
    assert {i["id"]: sorted(i["tags"]) for i in items}["1"] == ["música electrónica"]


def test_importing_again_keeps_stored_users_and_their_unsubscribes(
    tagloop_env: Path, tmp_path: Path, db: psycopg.Connection[Any]
) -> None:
    """The converter makes up every user's consent (`file`: true); a second import of the same data
    set must not count as the users opting in again: an unsubscribe received in between stays, and
    an operator's change to a user is kept."""
    src = hetrec(tmp_path)
    assert _import_lastfm(src, tmp_path / "out").returncode == 0
    tagloop = Path(sys.executable).parent / "tagloop"

    def run_user_3() -> str:
        done = subprocess.run(
            [str(tagloop), "run", "--user", "3", "--json"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        [decision] = json.loads(done.stdout)["decisions"]
        return str(decision["outcome"])

    unsubscribe = tmp_path / "unsub.jsonl"
    event = {"id": "u-3", "user_id": "3", "type": "unsubscribe", "context": {"channel": "file"}}
    unsubscribe.write_text(json.dumps({**event, "ts": "2026-03-01T12:00:00Z"}) + "\n", encoding="utf-8")
    subprocess.run([str(tagloop), "import", "events", str(unsubscribe)], check=True, capture_output=True)
    assert run_user_3() == "no_consent"  # user 3 has an unseen artist: only consent stops the send
    db.execute("update users set timezone = 'Europe/Oslo' where id = '2'")
    db.commit()
    before = db.execute("select id, timezone, consent, updated_at from users order by id").fetchall()

    again = _import_lastfm(src, tmp_path / "out")
    assert again.returncode == 0, again.stderr
    assert (
        again.stdout.splitlines()[0] == "users: 0 stored from 2 line(s), 2 already stored, left as they are"
    )
    assert db.execute("select id, timezone, consent, updated_at from users order by id").fetchall() == before
    assert set(request_unsubscribes(db, ["3"]).result()["3"]) == {"file"}  # what the next run reads
