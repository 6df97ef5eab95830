"""tagloop.policies — pure, seeded decision policies with exact propensities.

The agent calls `choose_slate` once per user for the content slate, `choose_arm` /
`linear_ts_choose` for template, channel and send hour, and the guards (`check_caps`,
`next_allowed_time`, `has_consent`, `check_unsubscribed`, `in_holdout`) before every send.
Every policy returns a `Decision` (or `(arm, propensity)`) so each logged choice can be
evaluated offline; parameters come from POLICY.toml (`load_policy`, `preset`).
"""

from tagloop.policies.bandits import (
    LinearTSModel,
    choose_arm,
    linear_ts_choose,
    linear_ts_probabilities,
    linear_ts_update,
    thompson_choose,
    thompson_probabilities,
    thompson_probabilities_batch,
)
from tagloop.policies.config import PolicyConfig, load_policy, parse_policy, preset
from tagloop.policies.decision import Decision
from tagloop.policies.diversity import calibrated_rerank, calibration_kl, mmr_rerank
from tagloop.policies.exploration import epsilon_slots, plackett_luce, slot_probabilities, uniform_slate
from tagloop.policies.exposure import (
    ProviderExposure,
    exposure_gini,
    head_providers,
    long_tail_providers,
    long_tail_quota,
    long_tail_share,
    position_weights,
)
from tagloop.policies.fairness import exposure_equity, exposure_need, fair_rerank
from tagloop.policies.guards import (
    GuardResult,
    check_caps,
    check_holdout,
    check_quiet_hours,
    check_unsubscribed,
    has_consent,
    in_holdout,
    is_quiet,
    next_allowed_time,
)
from tagloop.policies.slate import choose_slate, score_slate

__all__ = [
    "Decision",
    "GuardResult",
    "LinearTSModel",
    "PolicyConfig",
    "ProviderExposure",
    "calibrated_rerank",
    "calibration_kl",
    "check_caps",
    "check_holdout",
    "check_quiet_hours",
    "check_unsubscribed",
    "choose_arm",
    "choose_slate",
    "epsilon_slots",
    "exposure_equity",
    "exposure_gini",
    "exposure_need",
    "fair_rerank",
    "has_consent",
    "head_providers",
    "in_holdout",
    "is_quiet",
    "linear_ts_choose",
    "linear_ts_probabilities",
    "linear_ts_update",
    "load_policy",
    "long_tail_providers",
    "long_tail_quota",
    "long_tail_share",
    "mmr_rerank",
    "next_allowed_time",
    "parse_policy",
    "plackett_luce",
    "position_weights",
    "preset",
    "score_slate",
    "slot_probabilities",
    "thompson_choose",
    "thompson_probabilities",
    "thompson_probabilities_batch",
    "uniform_slate",
]
