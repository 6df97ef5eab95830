"""`tagloop eval recsys`: JSON contract, documented handling of bad input, and real-data quality."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tagloop.evals.cli import app
from tagloop.evals.recsys_eval import run_recsys
from tagloop.tools.recommender.model import RecParams

runner = CliRunner()
SMALL = RecParams(ease_lambda=5.0, cf_dim=6, tag_dim=4)


def _write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(5)
    train, test = [], []
    for u in range(30):
        g = u % 3
        items = rng.choice(8, size=6, replace=False)
        train += [f"u{u},g{g}-{i},{rng.integers(1, 30)}" for i in items[:4]]
        test += [f"u{u},g{g}-{i},3" for i in items[4:]]
    train += ["u0,g0-0,2", "u0,g0-0,2"]  # duplicate rows: summed
    test += ["cold,g1-1,4", "u1,never-seen,1"]  # cold user, unknown item
    tags = [f"g{g}-{i},genre{g},2" for g in range(3) for i in range(8)] + ["g2-new,genre2,1"]
    return (
        _write(tmp_path / "train.csv", "user_id,item_id,weight", train),
        _write(tmp_path / "test.csv", "user_id,item_id,weight", test),
        _write(tmp_path / "tags.csv", "item_id,tag,weight", tags),
    )


def test_json_has_the_spec_shape_and_recs_out_lists_top_50(tmp_path: Path) -> None:
    train, test, tags = _files(tmp_path)
    out = tmp_path / "recs.csv"
    args = ["recsys", "--train", str(train), "--test", str(test), "--item-tags", str(tags)]
    result = runner.invoke(app, [*args, "--json", "--recs-out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= {"tagloop", "popularity", "n_users"}
    assert data["n_users"] == 31 and data["n_users_skipped"] == 0
    for block in (data["tagloop"], data["popularity"]):
        assert set(block) == {"ndcg@10", "recall@20", "hit@10", "coverage@10"}
    rows = list(csv.DictReader(out.open()))
    assert {r["user_id"] for r in rows} >= {"cold", "u0"}
    assert all(1 <= int(r["rank"]) <= 50 for r in rows)
    train_items = {
        line.split(",")[1] for line in train.read_text().splitlines()[1:] if line.startswith("u0,")
    }
    assert not {r["item_id"] for r in rows if r["user_id"] == "u0"} & train_items


def test_model_beats_popularity_on_genre_data(tmp_path: Path) -> None:
    train, test, tags = _files(tmp_path)
    result = run_recsys(train, test, tags, 10, SMALL, seed=0)
    assert result.tagloop["ndcg@10"] > result.popularity["ndcg@10"]


def test_a_test_file_with_nothing_outside_train_exits_2_rather_than_scoring_zero(tmp_path: Path) -> None:
    train, _, _ = _files(tmp_path)
    result = runner.invoke(app, ["recsys", "--train", str(train), "--test", str(train), "--json"])
    assert result.exit_code == 2 and not result.stdout.strip()
    assert "no user of TEST has an item outside their TRAIN items" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("which", "content", "message"),
    [
        ("train", "user_id,item_id,weight\n", "no data rows"),
        ("train", "", "empty"),
        ("train", "user_id,item_id,weight\nu1,a,many\n", "is not a number"),
        ("test", "uid,item_id,weight\nu1,a,1\n", "lacks column"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(
    tmp_path: Path, which: str, content: str, message: str
) -> None:
    train, test, _ = _files(tmp_path)
    (train if which == "train" else test).write_text(content)
    result = runner.invoke(app, ["recsys", "--train", str(train), "--test", str(test), "--json"])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())  # the console may wrap long paths
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("train is a directory", "is a directory"),
        ("train not UTF-8", "train.csv:3: the file is not UTF-8 (byte 0xff)"),
        ("recs-out folder missing", "does not exist"),
    ],
)
def test_unreadable_inputs_and_unwritable_outputs_exit_2(tmp_path: Path, case: str, message: str) -> None:
    train, test, _ = _files(tmp_path)
    extra: list[str] = []
    if case == "train is a directory":
        train = tmp_path
    elif case == "train not UTF-8":
        train.write_bytes(b"user_id,item_id,weight\nu1,a,1\nu2,\xff\xfe,3\n")
    else:
        extra = ["--recs-out", str(tmp_path / "missing" / "recs.csv")]
    result = runner.invoke(app, ["recsys", "--train", str(train), "--test", str(test), *extra, "--json"])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_without_item_tags_and_with_a_bom_the_spec_json_comes_out(tmp_path: Path) -> None:
    """--item-tags is optional (a model without a tag vocabulary); a BOM before the header is no column."""
    train, test, tags = _files(tmp_path)
    train.write_bytes(b"\xef\xbb\xbf" + train.read_bytes())
    args = ["recsys", "--train", str(train), "--test", str(test), "--k", "100000", "--json"]
    for extra in ([], ["--item-tags", str(tags)]):  # with tags, a tag-only item counts in coverage
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["n_users"] == 31 and data["tagloop"]["ndcg@100000"] > 0
        assert 0 < data["tagloop"]["coverage@100000"] <= 1 and 0 < data["popularity"]["coverage@100000"] <= 1


@pytest.mark.realdata
def test_beats_popularity_on_a_lastfm_subsample(lastfm_split: Path, tmp_path: Path) -> None:
    keep = {str(u) for u in range(2, 700)}  # about a third of the users keeps this quick
    for name in ("train.csv", "test.csv"):
        lines = (lastfm_split / name).read_text().splitlines()
        kept = [line for line in lines[1:] if line.split(",")[0] in keep]
        _write(tmp_path / name, lines[0], kept)
    params = RecParams(cf_dim=64, tag_dim=63)
    result = run_recsys(
        tmp_path / "train.csv", tmp_path / "test.csv", lastfm_split / "item_tags.csv", 10, params, 0
    )
    assert result.n_users > 400
    assert result.tagloop["ndcg@10"] > 2.0 * result.popularity["ndcg@10"]
    assert result.tagloop["coverage@10"] > result.popularity["coverage@10"]


def test_recs_out_quotes_ids_holding_commas(tmp_path: Path) -> None:
    """Rows were written with f-strings: an id with a comma made a row of four fields or more."""
    rng = np.random.default_rng(9)
    tr_path, te_path = tmp_path / "train.csv", tmp_path / "test.csv"
    with tr_path.open("w", newline="") as tr, te_path.open("w", newline="") as te:
        train, test = csv.writer(tr), csv.writer(te)
        train.writerow(["user_id", "item_id", "weight"])
        test.writerow(["user_id", "item_id", "weight"])
        for u in range(12):
            items = rng.choice(8, size=6, replace=False)
            train.writerows([f"user,{u}", f"Artist, The {i}", 2] for i in items[:4])
            test.writerows([f"user,{u}", f"Artist, The {i}", 1] for i in items[4:])
    out = tmp_path / "recs.csv"
    result = runner.invoke(
        app, ["recsys", "--train", str(tr_path), "--test", str(te_path), "--recs-out", str(out)]
    )
    assert result.exit_code == 0, result.output
    recs = list(csv.reader(out.open(newline="")))
    assert recs[0] == ["user_id", "item_id", "rank"] and len(recs) > 12
    assert all(len(r) == 3 for r in recs)
    assert {r[0] for r in recs[1:]} == {f"user,{u}" for u in range(12)}
    assert {r[1] for r in recs[1:]} <= {f"Artist, The {i}" for i in range(8)}


def test_n_users_counts_the_scored_users_and_coverage_names_its_catalogue(tmp_path: Path) -> None:
    """A test user whose every test item is in their train rows is not scored (nothing left to
    find) but was counted in n_users; coverage@k divides by the catalogue the model ranks (TRAIN
    and tag-file items) plus the TEST items, now reported as n_items."""
    train, test, tags = _files(tmp_path)
    with train.open("a") as fh:
        fh.write("seen,g0-1,3\n")
    with test.open("a") as fh:
        fh.write("seen,g0-1,1\n")
    out = tmp_path / "recs.csv"
    args = ["recsys", "--train", str(train), "--test", str(test), "--item-tags", str(tags)]
    result = runner.invoke(app, [*args, "--recs-out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["n_users"], data["n_users_skipped"]) == (31, 1)
    ids = {
        line.split(",")[col]
        for path, col in ((train, 1), (test, 1), (tags, 0))
        for line in path.read_text().splitlines()[1:]
    }
    assert data["n_items"] == len(ids)
    top10 = {r["item_id"] for r in csv.DictReader(out.open()) if int(r["rank"]) <= 10}
    assert data["tagloop"]["coverage@10"] == pytest.approx(len(top10) / len(ids))


def test_progress_goes_to_stderr_as_plain_lines_when_it_is_not_a_terminal(tmp_path: Path) -> None:
    """The rich spinner printed nothing at all when stderr was a file or a pipe (28 s silent)."""
    train, test, _ = _files(tmp_path)
    result = runner.invoke(app, ["recsys", "--train", str(train), "--test", str(test), "--json"])
    assert result.exit_code == 0, result.output
    assert (
        "recsys eval: training on" in result.stderr and "recsys eval: ranking 31 test users" in result.stderr
    )
