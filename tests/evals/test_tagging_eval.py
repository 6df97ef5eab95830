"""`tagloop eval tagging` (SPEC §6): JSON shape, --tags-out, bad input, and quality on Last.fm."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from tagloop.evals.cli import app
from tagloop.evals.tagging_eval import evaluate_tagging, read_rows
from tagloop.tools.tagging.matrices import ItemTags, item_tag_matrix
from tagloop.tools.tagging.tuning import hide_tags


def invoke(args: list[str]) -> Result:
    """Run `tagloop eval tagging …` (typer collapses a one-command app, so add the name only for a group)."""
    group = len(app.registered_commands) + len(app.registered_groups) > 1
    return CliRunner().invoke(app, (["tagging"] if group else []) + args)


def write(path: Path, header: list[str], rows: Sequence[tuple[object, ...]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def rows_of(tags: ItemTags) -> list[tuple[str, str, float]]:
    return [(tags.items[i], t, w) for i in range(len(tags.items)) for t, w in tags.tags_of(i).items()]


@pytest.fixture
def small(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    groups = [[f"g{g}t{t}" for t in range(6)] for g in range(3)]
    full = [(f"i{i}", str(t), 1.0) for i in range(90) for t in rng.choice(groups[i % 3], 4, replace=False)]
    known, hidden = hide_tags(item_tag_matrix(full), 0.3, np.random.default_rng(1))
    inter = [(f"u{u}", f"i{i}", 1.0) for u in range(30) for i in range(u % 3, 90, 3) if rng.random() < 0.3]
    return {
        "known": write(tmp_path / "known.csv", ["item_id", "tag", "weight"],
                       rows_of(known)),
        "held": write(tmp_path / "held.csv", ["item_id", "tag"],
                      [(known.items[i], t) for i, tags in hidden.items() for t in sorted(tags)]),
        "inter": write(tmp_path / "train.csv", ["user_id", "item_id", "weight"], inter),
    }  # fmt: skip


def test_json_output_follows_the_spec_and_beats_popular_tags(small: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "tags.csv"
    result = invoke(["--item-tags", str(small["known"]), "--holdout", str(small["held"]),
                     "--interactions", str(small["inter"]), "--tags-out", str(out), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= {"tagloop", "popular_tags", "n_items"}
    assert set(data["tagloop"]) == {"precision@5", "recall@10"} == set(data["popular_tags"])
    assert data["n_items"] == 90
    assert data["tagloop"]["recall@10"] > data["popular_tags"]["recall@10"]
    # stderr is not a terminal here: progress as plain stage lines (a transient bar printed nothing)
    assert "tagging eval: fitting the model on KNOWN (30%)" in result.stderr
    assert "tagging eval: ranking tags for held-out items (100%)" in result.stderr
    rows = list(csv.DictReader(out.open()))
    assert set(rows[0]) == {"item_id", "tag", "rank"}
    ranks = [int(r["rank"]) for r in rows if r["item_id"] == "i0"]
    assert ranks == list(range(1, len(ranks) + 1)) and len(ranks) <= 20


def test_table_output_without_json(small: dict[str, Path]) -> None:
    result = invoke(["--item-tags", str(small["known"]), "--holdout", str(small["held"])])
    assert result.exit_code == 0, result.output
    assert "popular_tags" in result.stdout and "recall@10" in result.stdout


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["item", "tag"], [("a", "rock")], "lacks column"),
        (["item_id", "tag", "weight"], [("a", "rock", "lots")], "not a number"),
        (["item_id", "tag", "weight"], [("a", "", "1")], "empty tag"),
        (["item_id", "tag"], [], "no data rows"),
    ],
)
def test_bad_known_file_is_a_clear_error(tmp_path: Path, small: dict[str, Path], header: list[str],
                                         rows: list[tuple[str, ...]], message: str) -> None:  # fmt: skip
    bad = write(tmp_path / "bad.csv", header, rows)
    result = invoke(["--item-tags", str(bad), "--holdout", str(small["held"]), "--json"])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert result.stdout.strip() == "" or not result.stdout.lstrip().startswith("{")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("header-only holdout", "no data rows"),
        ("tags-out folder missing", "does not exist"),
        ("tags-out is a directory", "is a directory"),
        ("known too small", "no tag is on at least"),
        ("known not UTF-8", "bad.csv:3: the file is not UTF-8"),
        ("holdout is known", "no item of the held-out file has a tag that KNOWN lacks"),
    ],
)
def test_other_bad_inputs_exit_2_without_a_traceback(small: dict[str, Path], tmp_path: Path, case: str,
                                                     message: str) -> None:  # fmt: skip
    known, held, extra = small["known"], small["held"], []
    if case == "header-only holdout":
        held = write(tmp_path / "held.csv", ["item_id", "tag"], [])
    elif case == "tags-out folder missing":
        extra = ["--tags-out", str(tmp_path / "no" / "tags.csv")]
    elif case == "tags-out is a directory":
        extra = ["--tags-out", str(tmp_path)]
    elif case == "known too small":
        known = write(tmp_path / "tiny.csv", ["item_id", "tag"], [("1", "rock"), ("2", "pop")])
    elif case == "holdout is known":
        held = known
    else:
        known = tmp_path / "bad.csv"
        known.write_bytes(b"item_id,tag\na,rock\nb,caf\xe9\n")
    result = invoke(["--item-tags", str(known), "--holdout", str(held), *extra, "--json"])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_a_small_known_file_where_only_popularity_speaks_still_evaluates(tmp_path: Path) -> None:
    """The blend tuning divided by zero when no signal but popularity had anything to say."""
    known = write(
        tmp_path / "k.csv",
        ["item_id", "tag"],
        [("1", "rock"), ("2", "rock"), ("1", "pop"), ("2", "pop"), ("3", "pop")],
    )
    held = write(tmp_path / "h.csv", ["item_id", "tag"], [("1", "jazz")])
    result = invoke(["--item-tags", str(known), "--holdout", str(held), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_items"] == 1


def test_held_items_nobody_knows_are_counted_and_warned_about(small: dict[str, Path], tmp_path: Path) -> None:
    """A HELD file from another data set scored recall 1.0 for both rankers without a word."""
    held = write(tmp_path / "u.csv", ["item_id", "tag"], [("99999999", "rock"), ("zzz", "pop")])
    result = invoke(["--item-tags", str(small["known"]), "--holdout", str(held), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["items_without_evidence"] == 2
    assert "2 of 2 held-out item(s) appear in neither" in " ".join(result.stderr.split())


def test_missing_file_is_a_clear_error(small: dict[str, Path], tmp_path: Path) -> None:
    result = invoke(["--item-tags", str(tmp_path / "nope.csv"), "--holdout", str(small["held"])])
    assert result.exit_code == 2 and "not found" in result.output


@pytest.mark.realdata
@pytest.mark.slow
def test_lastfm_recall_at_10_is_at_least_2_5x_popular_tags(lastfm_split: Path) -> None:
    full = item_tag_matrix(read_rows(lastfm_split / "item_tags.csv", ("item_id", "tag"), "item_tags"))
    known, hidden = hide_tags(full, 0.3, np.random.default_rng(11))
    known_rows = [
        (known.items[i], t, w) for i in range(len(known.items)) for t, w in known.tags_of(i).items()
    ]
    held_rows = [(full.items[i], t, 1.0) for i, tags in hidden.items() for t in tags]
    inter = read_rows(lastfm_split / "train.csv", ("user_id", "item_id"), "train")
    report = evaluate_tagging(known_rows, held_rows, inter, seed=0)
    assert report.n_items > 10_000
    assert report.tagloop["recall@10"] >= 2.5 * report.popular_tags["recall@10"]
    assert report.tagloop["precision@5"] > report.popular_tags["precision@5"]


def test_items_without_evidence_are_ranked_by_tag_popularity_as_the_warning_says() -> None:
    """All their scores are 0, so the ranking fell to file order: rare tags listed first won."""
    known = [(f"r{k}{s}", f"rare{k:02d}", 1.0) for k in range(12) for s in "ab"]
    rng = np.random.default_rng(3)
    groups = [("metal", "doom", "heavy"), ("jazz", "bebop", "swing"), ("pop", "dance", "synth")]
    known += [(f"i{i}", t, 1.0) for i in range(90) for t in groups[i % 3] if rng.random() < 0.85]
    known += [(f"p{i}", "pop", 1.0) for i in range(20)]  # pop is the most popular tag
    held = [("new1", "pop", 1.0), ("new1", "dance", 1.0), ("new2", "pop", 1.0)]
    report = evaluate_tagging(known, held, None, seed=0)
    counts: dict[str, int] = {}
    for _, tag, _ in known:
        counts[tag] = counts.get(tag, 0) + 1
    by_popularity = sorted(counts, key=lambda t: -counts[t])
    assert report.without_evidence == 2
    assert report.ranked["new1"][0] == "pop"
    assert [counts[t] for t in report.ranked["new1"]] == sorted(counts[t] for t in by_popularity[:20])[::-1]
    assert report.tagloop == report.popular_tags


@pytest.mark.parametrize(("weight", "message"), [("0", None), ("-1", "must be a finite number >= 0"),
                                                 ("nan", "must be a finite number >= 0")])  # fmt: skip
def test_interaction_weights_are_read_as_eval_recsys_reads_them(
    small: dict[str, Path], tmp_path: Path, weight: str, message: str | None
) -> None:
    """`eval recsys` keeps a 0-weight row as seen; `eval tagging` refused the same file."""
    inter = tmp_path / "inter0.csv"
    inter.write_text(small["inter"].read_text() + f"u1,i0,{weight}\n")
    result = invoke(["--item-tags", str(small["known"]), "--holdout", str(small["held"]),
                     "--interactions", str(inter), "--json"])  # fmt: skip
    if message is None:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 2 and message in " ".join(result.output.split())
        assert f"inter0.csv:{len(inter.read_text().splitlines())}" in result.output
