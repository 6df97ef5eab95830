"""The API's token buckets: a principal over its rate is refused; buckets that refilled are forgotten,
so one bucket per unsubscribe link (one per message) does not grow the process for its whole life."""

from __future__ import annotations

import pytest

from tagloop.agent.http.auth import RateLimited, RateLimiter


def test_a_principal_over_its_rate_is_refused_until_its_bucket_refills() -> None:
    limiter = RateLimiter(per_minute=60)
    for _ in range(60):
        limiter.check("key:a", now=0.0)
    with pytest.raises(RateLimited):
        limiter.check("key:a", now=0.5)
    limiter.check("key:a", now=1.5)  # one token a second


def test_buckets_that_refilled_are_forgotten_and_a_limited_one_is_kept() -> None:
    limiter = RateLimiter(per_minute=60)
    for n in range(20_000):  # a mail scanner fetching every link: one principal each, 2 ms apart
        limiter.check(f"unsubscribe:{n}", now=n * 0.002)
    assert len(limiter) < 2 * RateLimiter.SWEEP_EVERY  # not 20,000: those older than 1 s refilled
    for _ in range(60):
        limiter.check("key:busy", now=40.0)
    for n in range(3 * RateLimiter.SWEEP_EVERY):  # sweeps while its bucket is empty
        limiter.check(f"unsubscribe:late-{n}", now=40.0)
    with pytest.raises(RateLimited):
        limiter.check("key:busy", now=40.0)
