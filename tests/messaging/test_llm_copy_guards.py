"""LLM copy guards through a local fake OpenAI-compatible server (no mocks): links a mail client or
browser could open must point at allowed hosts (after NFKC), ordinary prose with dots is kept, a
failing LLM is asked at most `max_failures` times in a row per run (`LLMBreaker`), every fallback
is logged once with its class and no personal data, and quoted names must be the chosen items."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tagloop.agent.prompts import COPY_SYSTEM
from tagloop.tools.llm import LLMBreaker, OpenAICompatibleLLM
from tagloop.tools.messaging.compose import compose_discovery, compose_with_llm, links_allowed
from tests.fake_openai import FakeOpenAI, fake_openai

HOSTS = ("music.example",)
TITLES = ["Alvvays - Archie", "Slowdive - Alison", "t.A.T.u. - All the Things She Said"]
FALLBACK = compose_discovery(TITLES, ["dream pop", "shoegaze"])

# Each of these was accepted as llm-v1 copy and delivered (audit), or is a close variant.
BYPASSES = [
    "https://evil.test\\.music.example/x",  # browsers read the backslash as a slash
    "evil.de",
    "www.evil-music.de/win",
    "//evil.test/x",
    "evil.test",
    "10.0.0.1/login",
    "203.0.113.9:8080/x",
    "evil\uff0ecom/login",  # fullwidth full stop
    "evil\u3002com/login",  # ideographic full stop
    "evil\uff61com/login",  # halfwidth ideographic full stop
    "\uff45\uff56\uff49\uff4c.com",  # fullwidth letters
    "https://music.example@evil.test/",
    "https://music.example.evil.test/",
    "http:///evil.test/",
    "https:/evil.test",
    "HTTPS://EVIL.TEST",
    "http://localhost:8080/x",
    "http://intranet/login",
    "https://[::1]/x",
    "https://2130706433/",
    "javascript:alert(1)",
    "evil.xn--p1ai",
    "evil.\u0440\u0444",  # evil.рф
    "evil.\u092d\u093e\u0930\u0924",  # evil.भारत (combining vowel sign)
    "mail me at win@evil.io",
]
PROSE = [
    "Mr. Smith, feat. Alvvays on vol. 2 of the mix. P.S. it runs 2.5 hours of t.A.T.u. vibes.",
    "Rated 4.5/5, e.g. dream pop, i.e. calm, U.S.A. and U.K. fans, No.1 at 10:30 a.m.",
    "Wait... what? Slowdive at 1.000.000 plays, Ph.D. approved and/or Mr.X approved.",
    "\u65b0\u3057\u3044\u66f2\u3067\u3059\u3002\u304a\u697d\u3057\u307f\u306b\u3002",  # Japanese, 。
    "Open https://music.example/m/1, www.music.example/x or SUB.Music.Example today.",
]
REPLIES: dict[str, Any] = {
    **{
        f"bypass{i}": json.dumps({"title": "Fresh picks", "body": f"Listen at {u} now"})
        for i, u in enumerate(BYPASSES)
    },
    **{f"prose{i}": json.dumps({"title": "Fresh picks: Archie", "body": p}) for i, p in enumerate(PROSE)},
    "badlinkfield": json.dumps({"title": "Picks", "body": "Enjoy!", "link": "https://evil.test/x"}),
    "scriptlink": json.dumps({"title": "Picks", "body": "Enjoy!", "link": "javascript:alert(1)"}),
    "goodlinkfield": json.dumps(
        {"title": "Picks: Archie", "body": "Enjoy!", "link": "https://music.example/m/1"}
    ),
    "offtopic": json.dumps(
        {"title": "Your account is locked", "body": "Call 555-0100 and give your password to restore access."}
    ),
    "inventedaround": json.dumps(
        {"title": 'New: "Dream Pop Greatest Hits Vol. 2"', "body": 'Stream "Best of Archie - Deluxe" now.'}
    ),
    "good": json.dumps({"title": "Fresh picks", "body": "Try Alvvays and Slowdive tonight."}),
    "madeup": json.dumps({"title": "Fresh picks", "body": 'Try "Plain Song A" and "Archie" tonight.'}),
    "quoted": json.dumps(
        {
            "title": "Fresh picks",
            "body": "Try \u201cArchie\u201d, \u201cSlowdive \u2013 Alison\u201d and \u201cDream Pop\u201d.",
        }
    ),
    "notjson": "Sure! Here is your notification:",
    "extra": json.dumps({"title": "x", "body": "y", "system": "z"}),
    "slow": json.dumps({"title": "late", "body": "late"}),
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with fake_openai(lambda mode, body: REPLIES.get(mode), slow_seconds=1.5) as server:
        yield server


def _llm(fake: FakeOpenAI, mode: str, timeout: float = 2.0) -> OpenAICompatibleLLM:
    return OpenAICompatibleLLM(
        fake.base_url(mode), "fake-model", "sk-secret-key", timeout=timeout, max_retries=0
    )


def _compose(fake: FakeOpenAI, mode: str, **kw: Any) -> Any:
    facts = {"items": TITLES, "top_tags": ["dream pop"], "locale": "en"}
    timeout = kw.pop("timeout", 2.0)
    return compose_with_llm(_llm(fake, mode, timeout), COPY_SYSTEM, facts, FALLBACK, HOSTS, **kw)


@pytest.mark.parametrize("i", range(len(BYPASSES)), ids=BYPASSES)
def test_links_a_client_could_open_to_other_hosts_fall_back_to_the_template(fake: FakeOpenAI, i: int) -> None:
    copy = _compose(fake, f"bypass{i}")
    assert (copy.template, copy.body) == ("discovery-v1", FALLBACK.body)
    assert copy.fallback_reason == "llm: disallowed link"
    assert not links_allowed(BYPASSES[i], HOSTS)


@pytest.mark.parametrize("i", range(len(PROSE)), ids=range(len(PROSE)))
def test_prose_with_dots_and_allowed_links_keeps_the_llm_copy(fake: FakeOpenAI, i: int) -> None:
    copy = _compose(fake, f"prose{i}")
    assert (copy.template, copy.body, copy.fallback_reason) == ("llm-v1", PROSE[i], None)


def test_the_link_field_must_be_an_http_link_to_an_allowed_host(fake: FakeOpenAI) -> None:
    assert _compose(fake, "badlinkfield").fallback_reason == "llm: disallowed link"
    assert _compose(fake, "scriptlink").fallback_reason == "llm: disallowed link"
    kept = _compose(fake, "goodlinkfield")
    assert kept.link == "https://music.example/m/1"
    assert kept.body.endswith(" https://music.example/m/1")  # where the message carries it


def test_without_an_allowlist_no_link_is_kept(fake: FakeOpenAI) -> None:
    facts = {"items": TITLES, "top_tags": ["dream pop"], "locale": "en"}
    copy = compose_with_llm(_llm(fake, "prose4"), COPY_SYSTEM, facts, FALLBACK, ())
    assert copy.fallback_reason == "llm: disallowed link"


def test_a_failing_llm_is_asked_twice_per_run_then_the_run_uses_templates(fake: FakeOpenAI) -> None:
    """Timeouts: the first two users wait for the LLM, the other eight get templates at once."""
    breaker = LLMBreaker(max_failures=2)
    before = fake.requests("slow")
    reasons = [_compose(fake, "slow", timeout=0.3, breaker=breaker).fallback_reason for _ in range(10)]
    assert reasons == ["llm: timeout"] * 2 + ["llm: circuit open"] * 8
    assert fake.requests("slow") - before == 2  # the other eight never waited on the LLM
    # another run (its own breaker) asks again; a success in between resets the streak
    fresh = LLMBreaker(max_failures=2)
    assert _compose(fake, "slow", timeout=0.3, breaker=fresh).fallback_reason == "llm: timeout"
    assert _compose(fake, "good", breaker=fresh).template == "llm-v1"
    assert _compose(fake, "slow", timeout=0.3, breaker=fresh).fallback_reason == "llm: timeout"
    assert _compose(fake, "good", breaker=fresh).template == "llm-v1"


def test_the_run_stops_asking_once_its_llm_time_budget_is_spent(fake: FakeOpenAI) -> None:
    breaker = LLMBreaker(budget_seconds=0.0)
    before = len(fake.seen)
    assert _compose(fake, "good", breaker=breaker).fallback_reason == "llm: time budget spent"
    assert len(fake.seen) == before


def test_bad_copy_does_not_open_the_circuit(fake: FakeOpenAI) -> None:
    """Answers the run could not use (bad link, invalid JSON) are not an unavailable LLM."""
    breaker = LLMBreaker(max_failures=2)
    for mode in ("bypass0", "notjson", "bypass1", "notjson"):
        assert _compose(fake, mode, breaker=breaker).fallback_reason != "llm: circuit open"
    assert _compose(fake, "good", breaker=breaker).template == "llm-v1"


@pytest.mark.parametrize(
    ("mode", "reason", "kind"),
    [
        ("slow", "llm: timeout", "timeout"),
        ("error500", "llm: http 500", "http_status"),
        ("notjson", "llm: invalid json", "invalid_json"),
        ("extra", "llm: schema violation (extra field)", "schema"),
        ("bypass0", "llm: disallowed link", "disallowed_link"),
        ("huge", "llm: too large", "too_large"),
    ],
)
def test_each_fallback_is_logged_once_with_its_class_and_no_personal_data(
    fake: FakeOpenAI, caplog: pytest.LogCaptureFixture, mode: str, reason: str, kind: str
) -> None:
    caplog.set_level(logging.DEBUG)
    copy = _compose(fake, mode, timeout=0.3, ref="decision-0001")
    assert copy.fallback_reason == reason
    lines = [r for r in caplog.records if getattr(r, "llm_fallback", None)]
    assert len(lines) == 1
    line = lines[0]
    assert line.llm_fallback["kind"] == kind and f"kind={kind}" in line.getMessage()  # type: ignore[attr-defined]
    assert "ref=decision-0001" in line.getMessage()
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ["sk-secret-key", *TITLES, "Alvvays", "evil.test", "dream pop"]:
        assert secret not in text


def test_quoted_names_must_be_the_chosen_items(fake: FakeOpenAI) -> None:
    """The model made up "Plain Song A": not among the items sent, so the template is used; quoting a
    title, part of one, or a top tag is fine. A made-up title around a known name is made up too,
    and copy naming none of the items or tags (an obeyed injection) is not about the picks."""
    assert _compose(fake, "madeup").fallback_reason == "llm: unknown item named"
    assert _compose(fake, "inventedaround").fallback_reason == "llm: unknown item named"
    assert _compose(fake, "offtopic").fallback_reason == "llm: names none of the items"
    kept = _compose(fake, "quoted")
    assert (kept.template, kept.fallback_reason) == ("llm-v1", None)
