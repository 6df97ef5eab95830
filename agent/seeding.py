"""The decision's seeded generators, made for a whole batch at once.

Every random choice of a decision draws from `np.random.default_rng([seed, stream])` (stream 0 the
slate, 1 the channel, 2 the send hour), so an offline replay can rebuild it from the logged seed.
Made one by one, a generator cost ~28 µs, most of it numpy's SeedSequence hashing the two integers
and generating PCG64's 128-bit state and increment (three per decision: ~7% of a decision's Python
time in bench/agent.py). `generators` runs that same hash (numpy's `SeedSequence.mix_entropy` and
`generate_state`, uint32 arithmetic) as array operations over the batch and hands each PCG64 its
four state words ready-made: ~3 µs per generator, bit for bit the generator numpy would build
(tests/agent/test_seeding.py compares the states and draws for thousands of seeds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.random.bit_generator import ISeedSequence

# numpy/random/bit_generator.pyx
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _MASK32 = 0xCA01F9DD, 0x4973F715, 0xFFFFFFFF
_SHIFT = np.uint32(16)
_POOL = 4


def generators(seeds: Sequence[int], stream: int) -> list[np.random.Generator]:
    """`np.random.default_rng([seed, stream])` for each seed (non-negative, below 2**64), in order."""
    if not 0 <= stream <= _MASK32:
        raise ValueError(f"stream must fit in 32 bits, got {stream}")
    pcg64: Any = np.random.PCG64  # typed for seeds, not for the ISeedSequence it also takes
    return [np.random.Generator(pcg64(_StateWords(w))) for w in _pcg64_words(seeds, stream)]


def _pcg64_words(seeds: Sequence[int], stream: int) -> np.ndarray:
    """n × 4 uint64: what `SeedSequence([seed, stream]).generate_state(4, np.uint64)` returns."""
    values = np.asarray(seeds, dtype=np.uint64).reshape(-1)
    low = (values & np.uint64(_MASK32)).astype(np.uint32)
    high = (values >> np.uint64(32)).astype(np.uint32)
    wide = high != 0  # the seed's uint32 words: [low] below 2**32, else [low, high]; then the stream
    # The entropy words, padded with zeros to the pool size: numpy hashes a missing word as 0.
    entropy = np.zeros((_POOL, values.size), dtype=np.uint32)
    entropy[0] = low
    entropy[1] = np.where(wide, high, np.uint32(stream))
    entropy[2] = np.where(wide, np.uint32(stream), np.uint32(0))
    const = [_INIT_A]
    pool = [_hashmix(entropy[i], const) for i in range(_POOL)]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = _mix(pool[dst], _hashmix(pool[src], const))
    out = np.empty((values.size, 8), dtype="<u4")  # 4 uint64 = 8 uint32 words, little-endian
    const_b = _INIT_B
    for i in range(8):
        word: np.ndarray = pool[i % _POOL] ^ np.uint32(const_b)
        const_b = (const_b * _MULT_B) & _MASK32
        word = word * np.uint32(const_b)
        out[:, i] = word ^ (word >> _SHIFT)
    return np.asarray(out.view("<u8"), dtype=np.uint64)  # native order, as PCG64 reads it


def _hashmix(value: np.ndarray, const: list[int]) -> np.ndarray:
    value = value ^ np.uint32(const[0])
    const[0] = (const[0] * _MULT_A) & _MASK32
    value = value * np.uint32(const[0])
    return value ^ (value >> _SHIFT)


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    result: np.ndarray = x * np.uint32(_MIX_L) - y * np.uint32(_MIX_R)
    return result ^ (result >> _SHIFT)


class _StateWords(ISeedSequence):
    """Hands PCG64 the state words computed above (its only use of a seed sequence)."""

    __slots__ = ("words",)

    def __init__(self, words: np.ndarray) -> None:
        self.words = words

    def generate_state(self, n_words: int, dtype: Any = np.uint32) -> Any:
        if n_words != _POOL or dtype is not np.uint64:
            raise ValueError("precomputed for PCG64: 4 uint64 words")
        return self.words
