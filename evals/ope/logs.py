"""tagloop's own decision log (`tagloop decisions export`) as logged bandit feedback for a candidate
policy — the `--logs DECISIONS.jsonl --policy POLICY.toml` source of `tagloop eval ope`.

A round is one decision that sent a message (context.outcome "message", or any decision with a
chosen slate when the outcome is absent); its reward is the logged one (1 = the message was opened
or clicked). The action is the whole ordered slate, so the importance weight is exact:

    π_b(slate) = Π_k propensities[k]    (the logged conditional slot propensities)
    π_e(slate) = Π_k score_slate(candidate, same inputs, forced = the logged slate)[k]

`score_slate` replays the candidate policy's slot-by-slot pipeline on the decision's candidates
with the inputs the agent gave it: scores, providers, and per candidate `long_tail` and `exposure`
(logged with the decision, policies/slate.py `replay_inputs`) and `tags` (the item's tag vector,
read by the export; MMR rows built as the agent builds them). A candidate policy whose knobs read
an input the log lacks is an error, as is calibration (the user's tag mix is not logged): a
replay on stand-ins gives propensities that are not the policy's. The candidate's long-tail head
mass and exposure half-life are not re-applied: the logged flags and exposure are used as they
are. When the candidate has the logging policy's name@version, every round is checked: the
replay must give the logged propensities (`ReplayCheck`; the command warns on a mismatch).
π_e is 0 when the candidate would show a slate of another length, or holds the user out (its
`guards.holdout_share`). Channel and send time are taken as logged: this evaluates the slate
policy only.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tagloop.evals.ope.feedback import BanditFeedback
from tagloop.policies import PolicyConfig, ProviderExposure, in_holdout
from tagloop.policies.diversity import UnitRowsArray, unit_length_rows
from tagloop.policies.slate import score_slate
from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.readers import not_utf8

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
class ReplayCheck:
    """Rounds logged by a policy of the candidate's name@version, and how many of them the replay
    did not reproduce (logged ≠ replayed propensities; `examples`: their decision ids)."""

    rounds: int = 0
    mismatched: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LogTask:
    feedback: BanditFeedback
    action_dist: np.ndarray
    logged_value: float  # mean reward of the logged rounds (the logging policy's on-policy value)
    n_records: int
    skipped: dict[str, int]
    logging_policies: dict[str, int]
    zero_target: int  # rounds where the candidate policy could not have shown the logged slate
    replay_check: ReplayCheck = field(default_factory=ReplayCheck)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a decision export; a bad line is an error naming its number."""
    if path.is_dir():
        raise InvalidInput(f"{path}: is a directory, expected a decision log (JSON Lines)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InvalidInput(
            f"{path}: decision log not found (write one with `tagloop decisions export --out FILE`)"
        ) from None
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read the decision log ({exc.strerror or exc})") from None
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


@dataclass(frozen=True)
class SlateInputs:
    """What `score_slate` needs to replay one logged decision, as the logging agent saw it."""

    scores: np.ndarray
    providers: list[str]
    long_tail: np.ndarray
    exposure: Mapping[str, float] | ProviderExposure
    item_tags: np.ndarray | None  # unit-length tag rows (MMR), None when the log has no tags
    actions: list[int]  # the logged slate as candidate indices


def _needs(cfg: PolicyConfig) -> dict[str, str]:
    """Per-candidate log field → the knob of `cfg` that reads it."""
    out = {}
    if cfg.fairness.long_tail_min_share > 0:
        out["long_tail"] = "fairness.long_tail_min_share"
    elif cfg.exploration.pool == "long_tail":
        out["long_tail"] = 'exploration.pool = "long_tail"'
    if cfg.fairness.lambda_ > 0:
        out["exposure"] = "fairness.lambda"
    if cfg.diversity.mmr_lambda > 0:
        out["tags"] = "diversity.mmr_lambda"
    return out


def slate_inputs(record: dict[str, Any], where: str, cfg: PolicyConfig | None = None) -> SlateInputs:
    """The replay inputs of a decision record. With `cfg`, an input the candidate policy reads but
    the record lacks (a log from before they were logged, an item gone from the catalogue) is an
    error: replaying on a stand-in (no long tail, no exposure, no tags) gives propensities that
    are not the policy's, so the importance weights would be silently wrong."""
    cands = record.get("candidates")
    if not isinstance(cands, list) or not cands:
        raise InvalidInput(f"{where}: field 'candidates' must be a non-empty list")
    try:
        ids = [str(c["item_id"]) for c in cands]
        scores = np.array([float(c["score"]) for c in cands])
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(f"{where}: every candidate needs 'item_id' and a numeric 'score'") from None
    if cfg is not None:
        if cfg.diversity.calibration_lambda > 0:
            raise InvalidInput(
                "the candidate policy calibrates (diversity.calibration_lambda > 0), which reads the "
                "user's tag mix at decision time; the decision log does not carry it, so its slate "
                "propensities cannot be replayed"
            )
        for name, knob in _needs(cfg).items():
            if not all(name in c for c in cands):
                raise InvalidInput(
                    f"{where}: the candidate policy's {knob} reads each candidate's '{name}', which this "
                    "decision does not carry (logged before tagloop recorded it, or an item no longer "
                    "in the catalogue); its propensities cannot be replayed"
                )
    providers = [str(c.get("provider") or "") for c in cands]
    tail = np.array([bool(c.get("long_tail", False)) for c in cands])
    table = {p: float(c["exposure"]) for p, c in zip(providers, cands, strict=True) if "exposure" in c}
    slots = ((record.get("context") or {}).get("slate") or {}).get("exposure_slots")
    exposure: Mapping[str, float] | ProviderExposure = table
    if isinstance(slots, list) and len(slots) == 2:  # a ProviderExposure: the quota is amortized
        exposure = ProviderExposure(exposure=table, slots_total=int(slots[0]), long_tail_slots=int(slots[1]))
    item_tags = _tag_rows(cands) if all("tags" in c for c in cands) else None
    position = {item: j for j, item in enumerate(ids)}
    chosen = [str(x["item_id"] if isinstance(x, dict) else x) for x in record["chosen"]]
    missing = [c for c in chosen if c not in position]
    if missing:
        raise InvalidInput(f"{where}: chosen item(s) {missing[:3]} are not among the candidates")
    return SlateInputs(scores, providers, tail, exposure, item_tags, [position[c] for c in chosen])


def _tag_rows(cands: list[dict[str, Any]]) -> np.ndarray:
    """The candidates' tag vectors as the agent's MMR reads them: dense over the tags they use
    (ascending tag id), each row scaled to unit length (agent/context.py `RunCache.unit_rows`)."""
    rows = [{int(t): float(w) for t, w in (c.get("tags") or {}).items()} for c in cands]
    used = sorted({t for r in rows for t in r})
    col = {t: i for i, t in enumerate(used)}
    dense = np.zeros((len(rows), max(len(used), 1)))
    for i, r in enumerate(rows):
        for t, w in r.items():
            dense[i, col[t]] = w
    return unit_length_rows(dense).view(UnitRowsArray)


def _replay(cfg: PolicyConfig, x: SlateInputs, forced: list[int]) -> np.ndarray:
    tags = x.item_tags if cfg.diversity.mmr_lambda > 0 else None
    return score_slate(cfg, x.scores, x.providers, tags, None, x.exposure, x.long_tail, forced)


def target_propensities(
    cfg: PolicyConfig, record: dict[str, Any], where: str, unit: Unit = "slate"
) -> np.ndarray | None:
    """The candidate policy's conditional propensities of the logged slate (with unit "top": of a
    slate led by the logged top item, slot 0 being the one that counts); None when the policy
    could not show it at all (a slate of another length, or the user held out)."""
    x = slate_inputs(record, where, cfg)
    k = min(cfg.k, x.scores.size)
    if in_holdout(str(record.get("user_id", "")), cfg.guards.holdout_share, cfg.guards.holdout_salt):
        return None
    if unit == "top":  # slot 0 does not depend on later slots: pad or cut the slate to the policy's k
        taken = set(x.actions)
        forced = (x.actions + [j for j in range(x.scores.size) if j not in taken])[:k]
        return _replay(cfg, x, forced)
    if len(x.actions) != k:
        return None
    return _replay(cfg, x, x.actions)


def target_probability(cfg: PolicyConfig, record: dict[str, Any], where: str, unit: Unit = "slate") -> float:
    """π_e(logged slate), or with unit "top" π_e(logged top item in slot 0), for the candidate policy."""
    props = target_propensities(cfg, record, where, unit)
    if props is None:
        return 0.0
    return float(props[0]) if unit == "top" else float(np.prod(props))


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


def _replays(replayed: np.ndarray | None, logged: list[float]) -> bool:
    """The replayed propensities are the logged ones."""
    return replayed is not None and np.allclose(replayed[: len(logged)], logged, rtol=1e-9, atol=1e-12)


def _probability(value: Any, where: str) -> float:
    p = _finite(value, where, "propensities")
    if not 0 < p <= 1:
        raise InvalidInput(f"{where}: each of 'propensities' must be in (0, 1], got {p:g}")
    return p


def _finite(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{where}: {name!r} must hold finite numbers, got {value!r}")
    return float(value)


def load_logs(path: Path, cfg: PolicyConfig, unit: Unit = "slate", min_overlap: int = 10) -> LogTask:
    """Build the feedback and the candidate policy's action distribution from a decision export;
    fewer than `min_overlap` rounds the candidate could have produced is an error (no estimate)."""
    if unit not in UNITS:
        raise InvalidInput(f"--unit must be one of {', '.join(UNITS)}, got {unit!r}")
    records = read_log(path)
    skipped = {"no_message": 0}
    rows, reward, pscore, target = [], [], [], []
    logging: dict[str, int] = {}
    checked, mismatched = 0, []
    for r in records:
        where = f"{path}:{r['_line']}"
        try:
            if not _sent(r):
                skipped["no_message"] += 1
                continue
            props = r.get("propensities")
            if not isinstance(props, list) or len(props) != len(r["chosen"]):
                raise InvalidInput(f"{where}: 'propensities' must list one probability per chosen item")
            probs = [_probability(p, where) for p in props]
            p_b = float(np.prod(probs)) if unit == "slate" else probs[0]
            if not 0 < p_b <= 1:
                raise InvalidInput(f"{where}: the logged slate probability {p_b:g} is not in (0, 1]")
            replayed = target_propensities(cfg, r, where, unit)
            if unit == "top":
                target.append(0.0 if replayed is None else float(replayed[0]))
            else:
                target.append(0.0 if replayed is None else float(np.prod(replayed)))
            if r.get("policy") == cfg.name and str(r.get("version")) == cfg.version:
                # The candidate is (by name) the logging policy: its replay must give the logged
                # propensities; where it does not, an input was not reproduced (or the TOML differs).
                checked += 1
                if not _replays(replayed, probs[:1] if unit == "top" else probs):
                    mismatched.append(r.get("decision_id") or where)
            pscore.append(p_b)
            reward.append(_finite(r.get("reward") or 0.0, where, "reward"))
            rows.append(_features(r))
            name = f"{r.get('policy', '?')}@{r.get('version', '?')}"
            logging[name] = logging.get(name, 0) + 1
        except (ValueError, TypeError, AttributeError, KeyError) as exc:  # a field of the wrong type
            raise InvalidInput(f"{where}: malformed decision record ({type(exc).__name__}: {exc})") from None
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
    return LogTask(
        fb,
        dist,
        float(np.mean(reward)),
        len(records),
        skipped,
        logging,
        int((p_e == 0).sum()),
        ReplayCheck(checked, len(mismatched), mismatched[:5]),
    )
