"""`tagloop eval ope` end to end: SPEC §6 JSON on real OBD data and on fabricated OBD-layout dirs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tagloop.evals.cli import app

SPEC_KEYS = {"ground_truth", "estimates", "ci95", "relative_error", "recommended"}


def write_obd_layout(
    root: Path, campaign: str, rng: np.random.Generator, n: int = 2000, n_items: int = 12
) -> float:
    """An OBD-layout dir (random + bts logs, item_context.csv); returns BTS's expected click rate."""
    ctr = rng.uniform(0.02, 0.15, n_items)
    bts_dist = np.exp(8 * ctr) / np.exp(8 * ctr).sum()
    for policy in ("random", "bts"):
        d = root / policy / campaign
        d.mkdir(parents=True)
        with (d / "item_context.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(
                ["", "item_id", "item_feature_0", "item_feature_1", "item_feature_2", "item_feature_3"]
            )
            for i in range(n_items):
                w.writerow([i, i, rng.normal(), f"c{i % 3}", f"d{i % 4}", "e"])
        items = rng.integers(0, n_items, n) if policy == "random" else rng.choice(n_items, n, p=bts_dist)
        pscore = np.full(n, 1 / n_items) if policy == "random" else bts_dist[items]
        with (d / f"{campaign}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(
                [
                    "",
                    "timestamp",
                    "item_id",
                    "position",
                    "click",
                    "propensity_score",
                    *(f"user_feature_{k}" for k in range(4)),
                    "user-item_affinity_0",
                ]
            )
            for i in range(n):
                click = int(rng.random() < ctr[items[i]])
                w.writerow(
                    [
                        i,
                        "2019-11-24 00:00:00+00:00",
                        items[i],
                        1 + i % 3,
                        click,
                        pscore[i],
                        f"u{i % 2}",
                        f"v{i % 3}",
                        "w",
                        "z",
                        0.0,
                    ]
                )
    return float(np.sum(bts_dist * ctr))


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["ope", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("campaign", ["men", "women"])
def test_other_campaign_layouts_work_unchanged(tmp_path: Path, campaign: str) -> None:
    expected = write_obd_layout(tmp_path, campaign, np.random.default_rng(len(campaign)))
    code, out, _ = _run("--obd", str(tmp_path), "--campaign", campaign, "--n-boot", "30", "--json")
    assert code == 0
    payload = json.loads(out)
    assert payload.keys() >= SPEC_KEYS
    assert {"ips", "snips", "dm", "dr"} <= payload["estimates"].keys()
    assert payload["recommended"] in payload["estimates"]
    assert payload["ci95"].keys() == payload["estimates"].keys()
    # the logged BTS click rate is a 2,000-round sample of `expected`
    assert payload["ground_truth"] == pytest.approx(expected, abs=0.03)
    for name, (lo, hi) in payload["ci95"].items():
        assert lo <= payload["estimates"][name] <= hi


def test_the_logs_alone_are_enough_without_item_context(tmp_path: Path) -> None:
    """SPEC §6 names only DIR/{random,bts}/{campaign}/{campaign}.csv: without item_context.csv each
    item is its own feature for the reward model."""
    expected = write_obd_layout(tmp_path, "all", np.random.default_rng(5))
    for policy in ("random", "bts"):
        (tmp_path / policy / "all" / "item_context.csv").unlink()
    code, out, err = _run("--obd", str(tmp_path), "--n-boot", "20", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload.keys() >= SPEC_KEYS and payload["ground_truth"] == pytest.approx(expected, abs=0.03)
    assert payload["recommended"] in payload["estimates"]
    assert abs(payload["estimates"]["dr"] - payload["ground_truth"]) < 0.05


def test_report_dir_gets_a_page_and_an_error_bar_plot(tmp_path: Path) -> None:
    write_obd_layout(tmp_path / "obd", "all", np.random.default_rng(3), n=900)
    code, out, _ = _run(
        "--obd", str(tmp_path / "obd"), "--n-boot", "20", "--json", "--report", str(tmp_path / "report")
    )
    assert code == 0
    page = (tmp_path / "report" / "index.md").read_text()
    assert "estimates.png" in page and "Recommended" in page
    assert "dashed: ground truth" in page
    assert (tmp_path / "report" / "estimates.png").stat().st_size > 1000
    assert json.loads(out)["recommended"] in page


def test_without_json_a_human_table_is_printed(tmp_path: Path) -> None:
    write_obd_layout(tmp_path, "all", np.random.default_rng(4), n=600)
    code, out, _ = _run("--obd", str(tmp_path), "--n-boot", "20")
    assert code == 0
    assert "dr-os" in out and "recommended" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--logs", "d.jsonl", "--policy", "p.toml"], "policy file not found"),
        ([], "--obd"),
        (["--obd", "/nonexistent/obd"], "not a directory"),
        (["--obd", ".", "--campaign", "kids"], "unknown campaign"),
    ],
)
def test_bad_invocations_get_a_clear_error_not_a_traceback(args: list[str], message: str) -> None:
    code, out, err = _run(*args, "--json")
    assert code == 2
    assert message in err
    assert out == ""


def test_missing_log_file_is_named(tmp_path: Path) -> None:
    write_obd_layout(tmp_path, "all", np.random.default_rng(5), n=100)
    (tmp_path / "bts" / "all" / "all.csv").unlink()
    code, _, err = _run("--obd", str(tmp_path), "--json")
    assert code == 2 and "all.csv not found" in err


@pytest.mark.realdata
def test_obd_all_recommended_estimator_is_accurate_and_covers_the_truth(obd_dir: Path) -> None:
    code, out, _ = _run("--obd", str(obd_dir), "--campaign", "all", "--n-boot", "60", "--json")
    assert code == 0
    payload = json.loads(out)
    truth, rec = payload["ground_truth"], payload["recommended"]
    assert truth == pytest.approx(0.0042)  # 42 clicks in the 10,000 BTS rounds
    assert payload["relative_error"][rec] < 0.15
    lo, hi = payload["ci95"][rec]
    assert lo <= truth <= hi
    assert payload["relative_error"][rec] < payload["relative_error"]["ips"]


def _spoil(path: Path, row: int, column: str, value: str | None) -> None:
    """Set `column` of data row `row` (1-based) to `value`; None cuts the row after three fields."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    header = rows[0]
    if value is None:
        rows[row] = rows[row][:3]
    else:
        rows[row][header.index(column)] = value
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


@pytest.mark.parametrize(
    ("policy", "column", "value", "message"),
    [
        ("random", "click", None, "data row 4 is too short (no position)"),
        ("random", "click", "nan", "data row 4: click must be a finite number"),
        ("bts", "click", "nan", "data row 4: click must be a finite number"),
        ("random", "click", "7", "data row 4: click must be 0 or 1"),
        ("random", "click", "-1", "data row 4: click must be 0 or 1"),
        ("random", "item_id", "3.7", "data row 4: item_id must be a whole number"),
        ("random", "position", "1.5", "data row 4: position must be a whole number"),
        ("random", "propensity_score", "abc", "data row 4: propensity_score must be a number"),
        ("random", "propensity_score", "0", "data row 4: propensity_score must lie in (0, 1], got 0"),
        ("random", "propensity_score", "-0.1", "data row 4: propensity_score must lie in (0, 1], got -0.1"),
        ("bts", "propensity_score", "1.5", "data row 4: propensity_score must lie in (0, 1], got 1.5"),
    ],
)
def test_a_bad_value_in_an_obd_log_names_its_row(
    tmp_path: Path, policy: str, column: str, value: str | None, message: str
) -> None:
    """Short rows were a TypeError traceback, NaN clicks printed NaN estimates (not JSON) with exit 0,
    and 7 / -1 / 3.7 / 1.5 were taken as they came or truncated."""
    write_obd_layout(tmp_path, "all", np.random.default_rng(6), n=100)
    _spoil(tmp_path / policy / "all" / "all.csv", 4, column, value)
    code, out, err = _run("--obd", str(tmp_path), "--n-boot", "20", "--json")
    assert (code, out) == (2, ""), err
    assert message in err and "Traceback" not in err


def test_an_obd_log_cut_before_the_user_features_names_its_row(tmp_path: Path) -> None:
    """A row ending after propensity_score was a TypeError traceback from the one-hot encoding."""
    write_obd_layout(tmp_path, "all", np.random.default_rng(7), n=100)
    path = tmp_path / "random" / "all" / "all.csv"
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    rows[2] = rows[2][:6]
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    code, out, err = _run("--obd", str(tmp_path), "--n-boot", "20", "--json")
    assert (code, out) == (2, ""), err
    assert f"{path}: data row 2 is too short (no user_feature_0)" in err and "Traceback" not in err


def test_an_obd_log_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    """A UTF-16 export was a UnicodeDecodeError traceback."""
    write_obd_layout(tmp_path, "all", np.random.default_rng(8), n=100)
    path = tmp_path / "bts" / "all" / "all.csv"
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))
    code, out, err = _run("--obd", str(tmp_path), "--n-boot", "20", "--json")
    assert (code, out) == (2, ""), err
    assert f"{path}:1: the file is not UTF-8" in err and "Traceback" not in err


def test_a_report_path_that_is_a_file_is_refused_before_the_data_is_read(tmp_path: Path) -> None:
    """It was refused only after the bootstrap (minutes on large logs); here the data dir does not
    even exist, so only an up-front check names the report."""
    (tmp_path / "afile").write_text("", encoding="utf-8")
    code, out, err = _run("--obd", str(tmp_path / "nowhere"), "--report", str(tmp_path / "afile"), "--json")
    assert (code, out) == (2, "")
    assert f"report directory {tmp_path / 'afile'} exists and is not a directory" in err


def test_progress_goes_to_stderr_as_plain_lines_when_it_is_not_a_terminal(tmp_path: Path) -> None:
    """The rich bar printed only a blank line when stderr was a file or a pipe."""
    write_obd_layout(tmp_path, "all", np.random.default_rng(9), n=300)
    code, out, err = _run("--obd", str(tmp_path), "--n-boot", "20", "--json")
    assert code == 0 and json.loads(out)["n_rounds"] == 300, err
    assert "ope: 300 rounds; fitting the reward model, then 20 bootstrap replicates" in err
    assert [line for line in err.splitlines() if line.startswith("ope: bootstrap")] == [
        f"ope: bootstrap {n}/20" for n in range(2, 21, 2)
    ]
