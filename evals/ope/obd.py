"""The Open Bandit Dataset as an OPE task: random-policy logs, the BTS policy, BTS's on-policy value.

Layout (SPEC §6): DIR/{random,bts}/{campaign}/{campaign}.csv with columns
`,timestamp,item_id,position,click,propensity_score,user_feature_0..3,user-item_affinity_*`, and
item_context.csv (`,item_id,item_feature_0..3`) beside each log, as the dataset ships it (without
it, which the SPEC's layout allows, each item is its own feature). Positions 1..L become 0..L-1.

Target policy: the BTS logs' empirical action frequencies per position, π(a | k) = #(a shown at k)
/ #(rounds at k). BTS is context-free, so over the logging week its action distribution is the
time-average of its per-round distributions, and the empirical frequency is an unbiased estimate of
exactly that average — the distribution that produced the ground truth (BTS's on-policy click
rate over the same week). Monte Carlo of Beta posteriors fitted on this 10k-row sample would
instead describe a policy that has seen only ~40 clicks, far from the production BTS whose prior
came from weeks of traffic (Open Bandit Pipeline ships that prior; we do not depend on it).

Features: user_feature_0..3 one-hot (round context); item_feature_0 numeric plus item_feature_1..3
one-hot (action context). The user-item affinity columns are not used (almost all zero).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagloop.evals.ope.feedback import BanditFeedback, context_free_action_dist
from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.readers import not_utf8

CAMPAIGNS = ("all", "men", "women")
LOG_COLUMNS = ("item_id", "position", "click", "propensity_score")
USER_COLUMNS = tuple(f"user_feature_{i}" for i in range(4))


@dataclass(frozen=True)
class OBDTask:
    feedback: BanditFeedback
    action_dist: np.ndarray
    ground_truth: float
    campaign: str


def _read_csv(path: Path, needed: tuple[str, ...]) -> dict[str, list[str]]:
    if not path.is_file():
        raise InvalidInput(
            f"{path} not found (expected the Open Bandit Dataset layout "
            "DIR/{random,bts}/{campaign}/{campaign}.csv with item_context.csv beside it)"
        )
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if missing:
                raise InvalidInput(f"{path}: missing column(s) {', '.join(missing)}")
            cols: dict[str, list[str]] = {c: [] for c in needed}
            for n, row in enumerate(reader, start=1):
                for c in needed:
                    value = row[c]
                    if value is None:  # DictReader's filler for a row with fewer fields than the header
                        raise InvalidInput(f"{path}: data row {n} is too short (no {c})")
                    cols[c].append(value)
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not cols[needed[0]]:
        raise InvalidInput(f"{path}: no data rows")
    return cols


def _numbers(path: Path, name: str, values: Sequence[str | None], kind: type) -> np.ndarray:
    """A column as finite numbers (`int`: whole numbers), or InvalidInput naming the data row."""
    out = np.empty(len(values), dtype=np.int64 if kind is int else np.float64)
    for row, text in enumerate(values, start=1):
        if text is None:
            raise InvalidInput(f"{path}: data row {row} is too short (no {name})")
        try:
            value = float(text)
        except ValueError:
            raise InvalidInput(f"{path}: data row {row}: {name} must be a number, got {text!r}") from None
        if not np.isfinite(value) or (kind is int and value != int(value)):
            what = "a whole number" if kind is int else "a finite number"
            raise InvalidInput(f"{path}: data row {row}: {name} must be {what}, got {text!r}")
        out[row - 1] = value
    return out


def one_hot(values: list[str]) -> np.ndarray:
    """(n, #levels) indicator matrix of a categorical column, levels in sorted order."""
    levels, codes = np.unique(np.asarray(values), return_inverse=True)
    out = np.zeros((len(values), len(levels)))
    out[np.arange(len(values)), codes] = 1.0
    return out


def _load_logs(root: Path, policy: str, campaign: str) -> dict[str, np.ndarray]:
    path = root / policy / campaign / f"{campaign}.csv"
    cols = _read_csv(path, LOG_COLUMNS + USER_COLUMNS)
    out = {c: _numbers(path, c, cols[c], int if c in ("item_id", "position") else float) for c in LOG_COLUMNS}
    out["context"] = np.hstack([one_hot(cols[c]) for c in USER_COLUMNS])
    if out["position"].min() < 1:
        raise InvalidInput(f"{path}: positions are numbered from 1")
    if not np.isin(out["click"], (0.0, 1.0)).all():
        row = int(np.flatnonzero(~np.isin(out["click"], (0.0, 1.0)))[0]) + 1
        raise InvalidInput(f"{path}: data row {row}: click must be 0 or 1")
    bad = ~((out["propensity_score"] > 0) & (out["propensity_score"] <= 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        value = float(out["propensity_score"][row - 1])
        raise InvalidInput(f"{path}: data row {row}: propensity_score must lie in (0, 1], got {value:g}")
    out["position"] = out["position"] - 1
    return out


def _item_context(root: Path, campaign: str) -> np.ndarray:
    path = root / "random" / campaign / "item_context.csv"
    cols = _read_csv(
        path, ("item_id", "item_feature_0", "item_feature_1", "item_feature_2", "item_feature_3")
    )
    ids = _numbers(path, "item_id", cols["item_id"], int)
    if not np.array_equal(np.sort(ids), np.arange(len(ids))):
        raise InvalidInput(f"{path}: item_id must be 0..{len(ids) - 1}, one row each")
    order = np.argsort(ids)
    feats = np.hstack(
        [_numbers(path, "item_feature_0", cols["item_feature_0"], float)[:, None]]
        + [one_hot(cols[f"item_feature_{i}"]) for i in (1, 2, 3)]
    )
    return feats[order]


def load_obd(root: Path, campaign: str = "all") -> OBDTask:
    """The random logs as feedback, BTS's empirical per-position distribution, BTS's click rate."""
    if campaign not in CAMPAIGNS:
        raise InvalidInput(f"unknown campaign {campaign!r}; choose one of {', '.join(CAMPAIGNS)}")
    if not root.is_dir():
        raise InvalidInput(f"--obd {root} is not a directory")
    rnd, bts = _load_logs(root, "random", campaign), _load_logs(root, "bts", campaign)
    if (root / "random" / campaign / "item_context.csv").exists():
        items = _item_context(root, campaign)
    else:  # SPEC §6 names only the logs: each item its own feature (the reward model learns per item)
        items = np.eye(int(max(rnd["item_id"].max(), bts["item_id"].max())) + 1)
    n_actions = items.shape[0]
    len_list = int(max(rnd["position"].max(), bts["position"].max())) + 1
    for name, logs in (("random", rnd), ("bts", bts)):
        if logs["item_id"].min() < 0 or logs["item_id"].max() >= n_actions:
            raise InvalidInput(
                f"{name}/{campaign}: item_id outside the {n_actions} items of item_context.csv"
            )
    counts = np.zeros((n_actions, len_list))
    np.add.at(counts, (bts["item_id"], bts["position"]), 1.0)
    shown = counts.sum(axis=0)
    if np.any(shown == 0):
        raise InvalidInput(f"bts/{campaign}: some position has no logged rounds")
    feedback = BanditFeedback(
        action=rnd["item_id"],
        position=rnd["position"],
        reward=rnd["click"],
        pscore=rnd["propensity_score"],
        context=rnd["context"],
        action_context=items,
        len_list=len_list,
    )
    return OBDTask(
        feedback,
        context_free_action_dist(counts / shown, feedback.n_rounds),
        float(bts["click"].mean()),
        campaign,
    )
