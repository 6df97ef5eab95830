"""Auto-tagging: tag proposals with confidences and sources for items (and message templates).

`autotag(items, vocab, known_tags, interactions, llm=..., rng=...)` runs, for each `ItemText`:
1. `keyword` — vocabulary phrases in its title and text (no network), kept when the tag is
   established and the phrase predicts it on already-tagged items (see sources.py; pass
   `keywords=keyword_stats(...)` over the whole catalogue when `items` is one batch of it, by
   default it is built from `items` and `known_tags`);
2. `llm` — when an `LLM` is given, vocabulary-constrained tags (batched; failures fall back);
3. `provider` — the tags of the item's provider (`provider_evidence`): the share of the
   provider's other tagged items that carry the tag, shrunk towards 0 with `PROVIDER_PRIOR_ITEMS`
   pseudo-items, share = carrying / (tagged + PROVIDER_PRIOR_ITEMS) — a new release of a label
   whose 20 of 21 items are lofi gets lofi at 0.77, a tag on 2 of 2 items stays provisional (0.29);
4. the `TagModel` fitted on the known tags plus the tags found in 1–2: `cooccurrence`,
   `colisten` (co-consumed items' tags) and `embedding`, blended (the blend's score is the
   confidence; the blend's `provider` weight is unused here, 3. scores providers on its own).
Evidence for one (item, tag) is combined by noisy-or, 1 − Π(1 − cᵢ); the proposal's source is
the strongest piece. Proposals under `CONFIRM_AT` are `provisional`: they must not enter user
profiles until behaviour confirms them. Tags an item already has are never proposed.
The returned `AutotagSummary` counts what happened — items tagged, items without text, items
with no signal at all, LLM batches failed, invented tags dropped, an empty vocabulary — so one
bad item or a dead LLM never fails the batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tagloop.tools.errors import InvalidInput
from tagloop.tools.llm import LLM
from tagloop.tools.tagging.matrices import interaction_matrix, item_tag_matrix
from tagloop.tools.tagging.model import SIGNALS, BlendWeights, ModelParams, TagModel, top_k
from tagloop.tools.tagging.sources import ItemText, KeywordStats, keyword_stats, keyword_tags, llm_tags
from tagloop.tools.tagging.vocabulary import Vocabulary

CONFIRM_AT = 0.5
PROVIDER_PRIOR_ITEMS = 5.0  # pseudo-items without the tag in a provider's share
Row = tuple[str, str, float]


@dataclass(frozen=True)
class TagProposal:
    item_id: str
    tag: str
    confidence: float
    source: str  # keyword | llm | cooccurrence | colisten | provider | embedding | popular

    @property
    def provisional(self) -> bool:
        return self.confidence < CONFIRM_AT


@dataclass
class AutotagSummary:
    items: int = 0
    tagged: int = 0
    skipped_already_tagged: int = 0
    without_text: int = 0
    without_signal: int = 0
    proposals: int = 0
    provisional: int = 0
    llm_batches: int = 0
    llm_failed_batches: int = 0
    llm_out_of_vocabulary: int = 0
    over_budget: int = 0  # items whose confirmed tags already fill --k (`tag items`): no new proposals
    problems: list[str] = field(default_factory=list)


@dataclass
class AutotagResult:
    proposals: list[TagProposal]
    summary: AutotagSummary


def _model_evidence(
    targets: Sequence[str],
    rows: list[Row],
    interactions: list[Row],
    rng: np.random.Generator,
    k: int,
    weights: BlendWeights,
    params: ModelParams | None,
) -> dict[str, dict[str, tuple[float, str]]]:
    items = list(dict.fromkeys([r[0] for r in rows] + list(targets) + [r[1] for r in interactions]))
    known = item_tag_matrix(rows, items=items)
    inter = interaction_matrix(interactions, items) if interactions else None
    model = TagModel(known, inter, None, rng, params)  # providers: `provider_evidence`
    blend = {**weights.as_dict(), "provider": 0.0}
    total = sum(blend.values()) or 1.0
    wd = {name: value / total for name, value in blend.items()}
    index = known.item_index()
    target_rows = np.array([index[t] for t in targets], dtype=np.int64)
    signals = model.signals(target_rows)
    scores = model.blend(target_rows, signals, BlendWeights(**wd))
    stacked = np.stack([wd[name] * signals[name] for name in SIGNALS])
    out: dict[str, dict[str, tuple[float, str]]] = {}
    for b, (item, best) in enumerate(zip(targets, top_k(scores, k, prior=model.tag_freq), strict=True)):
        for j in best:
            if np.isfinite(scores[b, j]) and scores[b, j] > 0:
                source = SIGNALS[int(np.argmax(stacked[:, b, j]))]
                out.setdefault(item, {})[model.tags[j]] = (float(scores[b, j]), source)
    return out


def provider_evidence(
    targets: Sequence[str], have: Mapping[str, Mapping[str, float]], providers: Mapping[str, str], k: int
) -> dict[str, dict[str, float]]:
    """Item → its provider's k most shared tags → carrying / (tagged + PROVIDER_PRIOR_ITEMS), over
    the provider's other items with known tags (`have`; the item's own tags are left out)."""
    tagged: Counter[str] = Counter()
    carrying: dict[str, Counter[str]] = {}
    for item, tags in have.items():
        provider = providers.get(item)
        if provider and tags:
            tagged[provider] += 1
            carrying.setdefault(provider, Counter()).update(tags.keys())
    out: dict[str, dict[str, float]] = {}
    for item in targets:
        provider = providers.get(item)
        if not provider or provider not in carrying:
            continue
        own = have.get(item, {})
        others = tagged[provider] - bool(own)
        shares = {
            tag: (n - (tag in own)) / (others + PROVIDER_PRIOR_ITEMS)
            for tag, n in carrying[provider].items()
            if tag not in own and n - (tag in own) > 0
        }
        best = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        if best:
            out[item] = dict(best)
    return out


def autotag(
    items: Sequence[ItemText],
    vocab: Vocabulary,
    known_tags: Iterable[Row] = (),
    interactions: Iterable[Row] = (),
    *,
    rng: np.random.Generator,
    llm: LLM | None = None,
    providers: Mapping[str, str] | None = None,
    only_untagged: bool = False,
    k: int = 10,
    min_confidence: float = 0.05,
    weights: BlendWeights | None = None,
    params: ModelParams | None = None,
    keywords: KeywordStats | None = None,
) -> AutotagResult:
    """Propose up to k new tags per item; see the module docstring for sources and confidences."""
    if k < 1:
        raise InvalidInput(f"k must be at least 1, got {k}")
    summary = AutotagSummary(items=len(items))
    if not vocab.tags:
        summary.problems.append("empty vocabulary: no tags to propose (import tagged items first)")
        return AutotagResult([], summary)
    known_tags = list(known_tags)
    have: dict[str, dict[str, float]] = {}
    for item, raw, weight in known_tags:
        tag = vocab.canonical(raw)
        if tag is not None:
            have.setdefault(item, {})[tag] = max(have.get(item, {}).get(tag, 0.0), float(weight))
    if only_untagged:
        targets = [it for it in items if not have.get(it.item_id)]
        summary.skipped_already_tagged = len(items) - len(targets)
    else:
        targets = list(items)
    summary.without_text = sum(1 for it in targets if not it.has_text())
    evidence: dict[str, dict[str, list[tuple[float, str]]]] = {}

    def add(item: str, tag: str, confidence: float, source: str) -> None:
        if tag not in have.get(item, {}):
            evidence.setdefault(item, {}).setdefault(tag, []).append((confidence, source))

    stats = keywords if keywords is not None else keyword_stats(items, known_tags, vocab)
    for it in targets:
        for tag, conf in keyword_tags(it, vocab, stats).items():
            add(it.item_id, tag, conf, "keyword")
    if llm is not None:
        outcome = llm_tags(llm, [it for it in targets if it.has_text()], vocab)
        summary.llm_batches, summary.llm_failed_batches = outcome.batches, outcome.failed_batches
        summary.llm_out_of_vocabulary = outcome.out_of_vocabulary
        summary.problems.extend(f"LLM batch failed: {e}" for e in outcome.errors[:5])
        for item, tags in outcome.tags.items():
            for tag, conf in tags.items():
                add(item, tag, conf, "llm")
    rows = [(i, t, w) for i, tags in have.items() for t, w in tags.items()]
    rows += [(i, t, max(c for c, _ in ev)) for i, tags in evidence.items() for t, ev in tags.items()]
    provider_of = {**(providers or {}), **{it.item_id: it.provider for it in items if it.provider}}
    for item, tags in provider_evidence([it.item_id for it in targets], have, provider_of, k).items():
        for tag, share in tags.items():
            add(item, tag, share, "provider")
    min_count = (params or ModelParams()).min_count
    items_per_tag = Counter(t for _, t in {(i, t) for i, t, _ in rows})
    if targets and len(items_per_tag) >= 2 and max(items_per_tag.values()) >= min_count:
        found = _model_evidence(
            [it.item_id for it in targets], rows, list(interactions), rng, k,
            weights or BlendWeights(), params,
        )  # fmt: skip
        for item, tags in found.items():
            for tag, (conf, source) in tags.items():
                add(item, tag, conf, source)
    else:  # the model needs a tag on at least `min_count` items (a tiny catalogue has none)
        summary.problems.append("too few tags in use to learn from co-occurrence; keyword/LLM tags only")
    proposals: list[TagProposal] = []
    for it in targets:
        combined = []
        for tag, ev in evidence.get(it.item_id, {}).items():
            confidence = 1.0 - float(np.prod([1.0 - c for c, _ in ev]))
            source = max(ev)[1]
            if confidence >= min_confidence:
                combined.append(TagProposal(it.item_id, tag, round(confidence, 6), source))
        combined.sort(key=lambda p: (-p.confidence, p.tag))
        proposals.extend(combined[:k])
        summary.tagged += bool(combined)
        summary.without_signal += not combined
    summary.proposals = len(proposals)
    summary.provisional = sum(p.provisional for p in proposals)
    return AutotagResult(proposals, summary)
