"""What the graph's nodes may use, injected per run (never globals): the database connection, the
candidate sources, the policy, the channels, the clock reading, the LLM (optional) and the run's
guard around it (`LLMBreaker`: after two failed calls in a row, or 60 s of calls, the rest of the
run uses templates), the run-level facts (long-tail providers, provider exposure, overall arm
engagement), a cache the run's batches share, and the run key that makes ids deterministic.
Randomness: every user's generator is seeded from the decision id."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
import scipy.sparse as sp
from psycopg.rows import tuple_row

from tagloop.agent import seeding
from tagloop.policies import PolicyConfig
from tagloop.policies.config import DiversityConfig
from tagloop.policies.diversity import MMRState, UnitRowsArray, unit_length_entries
from tagloop.tools.candidates import CandidateSource
from tagloop.tools.llm import LLM, LLMBreaker
from tagloop.tools.messaging.channels import Channel
from tagloop.tools.sparsevec import parse_sparsevecs
from tagloop.tools.store.catalogue import TAG_DIM
from tagloop.tools.store.runs import ArmCounts

if TYPE_CHECKING:
    from tagloop.agent.pipeline import ChunkPipeline

DECISION_NAMESPACE = uuid.UUID("1d8f3c55-9a0e-5b43-8f0e-7461676c6f70")
LOCAL_CHANNELS = frozenset({"file", "console"})  # channels that need no address
CHANNEL_SETTINGS = {"webhook": "TAGLOOP_OUTBOUND_WEBHOOK_URL and _SECRET", "email": "TAGLOOP_SMTP_URL"}


@dataclass(frozen=True)
class RunFacts:
    """Read once per run, shared by every batch."""

    head: frozenset[str] = frozenset()  # the most popular providers; empty: no popularity known
    exposure: Mapping[str, float] = field(default_factory=dict)
    arms: ArmCounts = field(default_factory=ArmCounts)
    templates: frozenset[str] = frozenset()  # items of kind `message`: copy, never a candidate

    def long_tail(self, providers: list[str]) -> np.ndarray:
        """Which of `providers` are long tail: any provider outside the head, those nobody has played
        included (an item without a provider, "", is not); none while no popularity is known."""
        head = self.head
        if not head:
            return np.zeros(len(providers), bool)
        return np.fromiter((bool(p) and p not in head for p in providers), bool, len(providers))


# sparsevec_send: the type's binary form (big-endian int32 dim, nnz, 0, nnz int32 indices, nnz float4
# values), parsed with numpy instead of a Python list per item.
_TAG_IDS = "select id, name from tags where name = any(%(names)s)"
_ITEM_TAGS = (
    "select id, kind, sparsevec_send(tag_vec) as vec from items"
    " where id = any(%(ids)s) and tag_vec is not null"
)


@dataclass
class RunCache:
    """Filled lazily during a run and shared by its batches: items' tag vectors (MMR/calibration) as
    one CSR store (row per item, columns = tag ids), exact Thompson propensities per distinct
    (successes, failures) evidence, and the names of the tags in users' top tags."""

    item_rows: dict[str, int] = field(default_factory=dict)  # item id → row of the CSR store
    thompson: dict[tuple[bytes, bytes], np.ndarray] = field(default_factory=dict)
    tag_names: dict[int, str] = field(default_factory=dict)  # of the users' top tags (profiles)
    tag_ids: dict[str, int | None] = field(default_factory=dict)  # of declared interests (None: no such tag)
    kinds: dict[str, str] = field(default_factory=dict)  # of the items with tags (the words of a reason)
    # the CSR store's arrays with room to grow (doubled when full: appending a chunk's new items
    # copies nothing most of the time, where concatenating copied the whole store every chunk)
    _indptr: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    _indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    _data: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))

    @property
    def indptr(self) -> np.ndarray:
        return self._indptr[: len(self.item_rows) + 1]

    @property
    def indices(self) -> np.ndarray:  # tag ids
        return self._indices[: self._indptr[len(self.item_rows)]]

    @property
    def data(self) -> np.ndarray:
        return self._data[: self._indptr[len(self.item_rows)]]

    def load_item_tags(self, conn: psycopg.Connection[Any], item_ids: Iterable[str]) -> None:
        """Tag vectors of the items not cached yet, one query (items without tags: empty rows)."""
        rows = self.item_rows
        ids = item_ids if isinstance(item_ids, list | set | frozenset) else list(item_ids)
        if rows.keys() >= set(ids):  # the usual case once the batch's candidates are in: no loop
            return
        missing = [i for i in dict.fromkeys(ids) if i not in rows]
        with conn.cursor(row_factory=tuple_row) as cur:
            found: dict[str, bytes] = {}
            for item, kind, vec in cur.execute(_ITEM_TAGS, {"ids": missing}).fetchall():
                found[item] = vec
                self.kinds[item] = kind
        nnz, tags, weights = parse_sparsevecs([found.get(i) for i in missing])
        base = len(rows)
        end = int(self._indptr[base])
        self._indptr = _appended(self._indptr, base + 1, end + np.cumsum(nnz))
        self._indices = _appended(self._indices, end, tags)
        self._data = _appended(self._data, end, weights)
        rows.update(zip(missing, range(base, base + len(missing)), strict=True))

    def ids_of_tags(self, conn: psycopg.Connection[Any], names: Iterable[str]) -> dict[str, int]:
        """The ids of the tags named (stored names, as declared interests are kept), read when not
        cached yet; a name no tag has is left out."""
        wanted = list(dict.fromkeys(names))
        missing = [n for n in wanted if n not in self.tag_ids]
        if missing:
            with conn.cursor(row_factory=tuple_row) as cur:
                found = {name: tag for tag, name in cur.execute(_TAG_IDS, {"names": missing}).fetchall()}
            self.tag_ids.update({n: found.get(n) for n in missing})
        return {n: i for n in wanted if (i := self.tag_ids[n]) is not None}

    def tags_per_item(self, conn: psycopg.Connection[Any], item_ids: list[str]) -> list[set[int]]:
        """Each item's tag ids (loaded when not cached yet), in the order given."""
        self.load_item_tags(conn, item_ids)
        lens, at = self._entries(item_ids)
        ends = np.cumsum(lens)
        return [set(part.tolist()) for part in np.split(self.indices[at], ends[:-1])] if len(item_ids) else []

    def _entries(self, item_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per item (all loaded), its number of tags, and the store positions of all their
        entries, item after item."""
        rows = np.fromiter(map(self.item_rows.__getitem__, item_ids), np.int64, len(item_ids))
        lo = self.indptr[rows]
        lens = self.indptr[rows + 1] - lo
        return lens, np.repeat(lo - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))

    def unit_rows(
        self, conn: psycopg.Connection[Any], item_ids: Iterable[str], max_cols: int = 256
    ) -> UnitRows | None:
        """The items' tag vectors scaled to unit length, dense over the tags they use, for a whole
        chunk's candidates at once (MMR needs only cosines); None when they use more than
        `max_cols` tags (wide tag spaces: `tag_matrix` per user). One matrix per chunk instead of
        a sparse one per user saves ~0.07 ms per decision."""
        ids = list(dict.fromkeys(item_ids))
        self.load_item_tags(conn, ids)
        lens, at = self._entries(ids)
        local, width = _compact(self.indices[at])
        if width > max_cols:
            return None
        # scaled per item from its sparse entries (tag id order, as the dense rows' columns): the
        # bits of unit_length_rows on the dense rows, without scanning them
        unit = _dense(lens, local, unit_length_entries(lens, self.data[at]), width)
        return UnitRows(dict(zip(ids, range(len(ids)), strict=True)), unit)

    def tag_matrix(
        self,
        conn: psycopg.Connection[Any],
        cfg: DiversityConfig,
        item_ids: list[str],
        profile: Mapping[int, float],
    ) -> tuple[sp.csr_array | np.ndarray | None, np.ndarray | None]:
        """The items' (n × tags they use) matrix for `choose_slate` and, when calibration is on,
        the user's tag mix (`profile`: tag id → weight) over the same columns (its tags added);
        (None, None) when neither knob is on. Sparse: with dozens of tags per item a dense matrix
        over the candidates' tags is thousands of columns wide, while MMR needs only the n × n
        cosines (one sparse product, policies/diversity.py). Without calibration and at most
        `MMRState.DENSE_CELLS` cells it is a dense array, which MMR would densify anyway (no scipy
        construction: ~0.1 ms per decision)."""
        if cfg.mmr_lambda <= 0 and cfg.calibration_lambda <= 0:
            return None, None
        self.load_item_tags(conn, item_ids)
        lens, at = self._entries(item_ids)
        cols, data = self.indices[at], self.data[at]
        with_mix = cfg.calibration_lambda > 0 and bool(profile)
        if with_mix:
            cols = np.concatenate([cols, np.fromiter(profile, np.int32, len(profile))])
        local, width = _compact(cols)
        if not with_mix and len(item_ids) * width <= MMRState.DENSE_CELLS:
            return _dense(lens, local, data, width), None
        indptr = np.concatenate([[0], np.cumsum(lens)])
        matrix = sp.csr_array((data, local[: data.size], indptr), shape=(len(item_ids), width))
        mix = None
        if with_mix:
            mix = np.zeros(width)
            mix[local[data.size :]] = list(profile.values())
        return matrix, mix


@dataclass(frozen=True)
class UnitRows:
    """Unit-length tag rows of a chunk's candidates (`RunCache.unit_rows`)."""

    row: dict[str, int]
    matrix: np.ndarray

    def of(self, item_ids: list[str]) -> np.ndarray:
        rows = self.matrix[np.fromiter(map(self.row.__getitem__, item_ids), np.intp, len(item_ids))]
        return rows.view(UnitRowsArray)


def _appended(buf: np.ndarray, used: int, extra: np.ndarray) -> np.ndarray:
    """`buf[:used]` followed by `extra`, in `buf` when it has room, else in one twice as large."""
    need = used + len(extra)
    if need > len(buf):
        grown = np.empty(max(need, 2 * len(buf)), dtype=buf.dtype)
        grown[:used] = buf[:used]
        buf = grown
    buf[used:need] = extra
    return buf


def _dense(lens: np.ndarray, cols: np.ndarray, data: np.ndarray, width: int) -> np.ndarray:
    """Rows of `lens[i]` entries each (columns `cols`, values `data`, item after item) as a dense
    (len(lens) × width) array; an item's tag ids are distinct, so no entry adds to another."""
    dense = np.zeros((lens.size, width))
    dense[np.repeat(np.arange(lens.size), lens), cols] = data
    return dense


_table: list[np.ndarray] = []  # the process's tag id → column scratch table (4 MB, made on first use)
_table_lock = threading.Lock()


def _compact(cols: np.ndarray) -> tuple[np.ndarray, int]:
    """`np.unique(cols, return_inverse=True)` as (inverse, max(number of distinct, 1)), through a
    tag id → column scratch table shared by the process (under a lock; the HTTP server decides on
    many threads): sorting only the distinct ids instead of every entry (~35 µs instead of
    ~250 µs for a slate's ~4,000 entries)."""
    if cols.size == 0 or cols.min() < 0 or cols.max() >= TAG_DIM:
        used, local = np.unique(cols, return_inverse=True)
        return local, max(used.size, 1)
    at = np.arange(cols.size, dtype=np.int32)
    with _table_lock:
        if not _table:
            _table.append(np.zeros(TAG_DIM, dtype=np.int32))
        table = _table[0]
        table[cols] = at  # one position per distinct id survives; only this call's ids are read back
        used = np.sort(cols[table[cols] == at])
        table[used] = np.arange(used.size, dtype=np.int32)
        local = table[cols]
    return local, max(used.size, 1)


@dataclass(frozen=True)
class RunContext:
    conn: psycopg.Connection[Any]
    channels: Mapping[str, Channel]
    now: datetime
    run_key: str
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sources: Sequence[CandidateSource] = ()
    facts: RunFacts = field(default_factory=RunFacts)
    candidate_k: int = 100
    llm: LLM | None = None
    # this run's guard around `llm` (consecutive failures, time budget): one per run, shared by its
    # chunks (`replace` keeps it), never global
    llm_breaker: LLMBreaker = field(default_factory=LLMBreaker, compare=False)
    allowed_link_hosts: frozenset[str] = frozenset()
    quiet_exempt: frozenset[str] = frozenset({"file", "console"})
    local_channels: frozenset[str] = LOCAL_CHANNELS
    cache: RunCache = field(default_factory=RunCache, compare=False)
    pipeline: ChunkPipeline | None = field(default=None, compare=False)  # set by `decide` (agent/pipeline.py)

    def pump(self) -> None:
        """Let the database go on with the reads sent ahead (agent/pipeline.py); a no-op outside
        a chunked batch."""
        if self.pipeline is not None:
            self.pipeline.pump()

    def decision_id(self, user_id: str, run_key: str | None = None) -> str:
        return str(uuid.uuid5(DECISION_NAMESPACE, f"decision|{user_id}|{run_key or self.run_key}"))

    def message_id(self, decision_id: str, channel: str) -> str:
        return str(uuid.uuid5(DECISION_NAMESPACE, f"message|{decision_id}|{channel}"))

    @staticmethod
    def seed_of(decision_id: str) -> int:
        return uuid.UUID(decision_id).int & ((1 << 63) - 1)

    @staticmethod
    def rngs_for(seeds: Sequence[int], stream: int) -> list[np.random.Generator]:
        """Independent seeded streams per user, for a batch of seeds: 0 slate, 1 channel, 2 send
        hour — each the generator of `np.random.default_rng([seed, stream])` (agent/seeding.py)."""
        return seeding.generators(seeds, stream)
