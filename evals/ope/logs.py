"""tagloop's own decision log (`tagloop decisions export`) as logged bandit feedback for a candidate
policy — the `--logs DECISIONS.jsonl --policy POLICY.toml` source of `tagloop eval ope`.

A round is one decision that sent a message (context.outcome "message", or any decision with a
chosen slate when the outcome is absent); its reward is the logged one (1 = the message was opened
or clicked). The action is the whole ordered slate, so the importance weight is exact:

    π_b(slate) = Π_k propensities[k]    (the logged conditional slot propensities)
    π_e(slate) = Π_k score_slate(candidate, same inputs, forced = the logged slate)[k]

`score_slate` replays the candidate policy's slot-by-slot pipeline on the decision's candidates
(scores, providers; per-candidate `long_tail` and `exposure` when the log carries them, else not
long-tail and unexposed). π_e is 0 when the candidate would show a slate of another length, or
holds the user out (its `guards.holdout_share`). Channel and send time are taken as logged: this
evaluates the slate policy only.

`unit="top"` (`--unit top`) evaluates the top slot only — the item the message leads with — with
π_b = propensities[0] (the marginal of slot 0) and π_e = the candidate's probability of that item
in slot 0: far more overlap between unlike policies, at the price of crediting the whole message's
reward to its first item (biased where the rest of the slate matters).

In `BanditFeedback` terms: A = 2 actions — 0 "the logged slate", 1 "any other slate" — one
position, `pscore` = π_b(slate) and `action_dist[i] = [π_e, 1 − π_e]`. IPS, SNIPS and DR are then
the standard slate estimators (unbiased for IPS/DR with exact propensities); DM's reward model sees
the round's context features (local hour, weekday, history size, skip rate, candidate scores) and
cannot tell slates apart, so it leans to the logging policy's value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tagloop.evals.ope.feedback import BanditFeedback
from tagloop.policies import PolicyConfig, in_holdout
from tagloop.policies.slate import score_slate
from tagloop.tools.errors import InvalidInput

Unit = Literal["slate", "top"]
UNITS: tuple[str, ...] = ("slate", "top")
FEATURES = (
    "hour_sin",
    "hour_cos",
    "weekend",
    "log_events",
    "skip_rate",
    "mean_score",
    "top_score",
    "log_candidates",
)


@dataclass(frozen=True)
class LogTask:
    feedback: BanditFeedback
    action_dist: np.ndarray
    logged_value: float  # mean reward of the logged rounds (the logging policy's on-policy value)
    n_records: int
    skipped: dict[str, int]
    logging_policies: dict[str, int]
    zero_target: int  # rounds where the candidate policy could not have shown the logged slate


def read_log(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a decision export; a bad line is an error naming its number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InvalidInput(
            f"{path}: decision log not found (write one with `tagloop decisions export --out FILE`)"
        ) from None
    records = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{n}: not JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise InvalidInput(f"{path}:{n}: expected a JSON object (one decision per line)")
        records.append((n, record))
    return [dict(r, _line=n) for n, r in records]


def _sent(record: dict[str, Any]) -> bool:
    outcome = (record.get("context") or {}).get("outcome")
    return bool(record.get("chosen")) and outcome in (None, "message")


def slate_inputs(
    record: dict[str, Any], where: str
) -> tuple[np.ndarray, list[str], np.ndarray, dict[str, float], list[int]]:
    """scores, providers, long-tail flags, exposure and the logged slate as candidate indices."""
    cands = record.get("candidates")
    if not isinstance(cands, list) or not cands:
        raise InvalidInput(f"{where}: field 'candidates' must be a non-empty list")
    try:
        ids = [str(c["item_id"]) for c in cands]
        scores = np.array([float(c["score"]) for c in cands])
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(f"{where}: every candidate needs 'item_id' and a numeric 'score'") from None
    providers = [str(c.get("provider") or "") for c in cands]
    tail = np.array([bool(c.get("long_tail", False)) for c in cands])
    exposure = {p: float(c["exposure"]) for p, c in zip(providers, cands, strict=True) if "exposure" in c}
    position = {item: j for j, item in enumerate(ids)}
    chosen = [str(x["item_id"] if isinstance(x, dict) else x) for x in record["chosen"]]
    missing = [c for c in chosen if c not in position]
    if missing:
        raise InvalidInput(f"{where}: chosen item(s) {missing[:3]} are not among the candidates")
    return scores, providers, tail, exposure, [position[c] for c in chosen]


def target_probability(cfg: PolicyConfig, record: dict[str, Any], where: str, unit: Unit = "slate") -> float:
    """π_e(logged slate), or with unit "top" π_e(logged top item in slot 0), for the candidate policy."""
    scores, providers, tail, exposure, actions = slate_inputs(record, where)
    k = min(cfg.k, scores.size)
    if in_holdout(str(record.get("user_id", "")), cfg.guards.holdout_share, cfg.guards.holdout_salt):
        return 0.0
    if unit == "top":  # slot 0 does not depend on later slots: pad or cut the slate to the policy's k
        rest = [j for j in range(scores.size) if j not in set(actions)]
        forced = (actions + rest)[:k]
        return float(score_slate(cfg, scores, providers, None, None, exposure, tail, forced)[0])
    if len(actions) != k:
        return 0.0
    props = score_slate(cfg, scores, providers, None, None, exposure, tail, actions)
    return float(np.prod(props))


def _features(record: dict[str, Any]) -> list[float]:
    ctx = record.get("context") or {}
    hour = float(ctx.get("local_hour") or 0.0)
    scores = [float(c.get("score", 0.0)) for c in record.get("candidates") or []] or [0.0]
    return [
        math.sin(2 * math.pi * hour / 24),
        math.cos(2 * math.pi * hour / 24),
        float(int(ctx.get("weekday") or 1) >= 6),
        math.log1p(float(ctx.get("n_events") or 0.0)),
        float(ctx.get("skip_rate") or 0.0),
        float(np.mean(scores)),
        float(max(scores)),
        math.log1p(len(scores)),
    ]


def load_logs(path: Path, cfg: PolicyConfig, unit: Unit = "slate", min_overlap: int = 10) -> LogTask:
    """Build the feedback and the candidate policy's action distribution from a decision export;
    fewer than `min_overlap` rounds the candidate could have produced is an error (no estimate)."""
    if unit not in UNITS:
        raise InvalidInput(f"--unit must be one of {', '.join(UNITS)}, got {unit!r}")
    records = read_log(path)
    skipped = {"no_message": 0}
    rows, reward, pscore, target = [], [], [], []
    logging: dict[str, int] = {}
    for r in records:
        where = f"{path}:{r['_line']}"
        if not _sent(r):
            skipped["no_message"] += 1
            continue
        props = r.get("propensities")
        if not isinstance(props, list) or len(props) != len(r["chosen"]):
            raise InvalidInput(f"{where}: 'propensities' must list one probability per chosen item")
        p_b = float(np.prod([float(p) for p in props])) if unit == "slate" else float(props[0])
        if not 0 < p_b <= 1:
            raise InvalidInput(f"{where}: the logged slate probability {p_b:g} is not in (0, 1]")
        target.append(target_probability(cfg, r, where, unit))
        pscore.append(p_b)
        reward.append(float(r.get("reward") or 0.0))
        rows.append(_features(r))
        name = f"{r.get('policy', '?')}@{r.get('version', '?')}"
        logging[name] = logging.get(name, 0) + 1
    if not rows:
        raise InvalidInput(f"{path}: no decision that sent a message (nothing to evaluate)")
    overlap = int(np.count_nonzero(target))
    if overlap < min_overlap:
        hint = " (try --unit top: the top slot only)" if unit == "slate" else ""
        raise InvalidInput(
            f"{path}: the candidate policy could have produced the logged {unit} in only {overlap} of "
            f"{len(rows)} rounds; too little overlap with the logging policy to estimate anything{hint}"
        )
    x = np.array(rows)
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    n = len(rows)
    p_e = np.array(target)
    fb = BanditFeedback(
        action=np.zeros(n, dtype=np.int64),
        position=np.zeros(n, dtype=np.int64),
        reward=np.array(reward),
        pscore=np.array(pscore),
        context=x,
        action_context=np.eye(2),
        len_list=1,
    )
    dist = np.stack([p_e, 1.0 - p_e], axis=1)[:, :, None]
    return LogTask(fb, dist, float(np.mean(reward)), len(records), skipped, logging, int((p_e == 0).sum()))
