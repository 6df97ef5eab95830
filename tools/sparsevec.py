"""pgvector `sparsevec` values read in binary (`sparsevec_send`) and parsed with numpy, many at once:
the item tag vectors of a run cache (agent/context.py) and of the exact tag search
(tools/tag_exact.py), users' tag profiles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_EMPTY = bytes(12)  # a sparsevec without entries


def parse_sparsevecs(
    blobs: Sequence[bytes | memoryview | None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pgvector `sparsevec_send` blobs (big-endian int32 dim, nnz, 0, then nnz int32 indices and nnz
    float4 values) as (nnz per blob, every index, every value as float64), blob after blob; None (a
    NULL vector, e.g. an item without tags) counts as a vector without entries."""
    given = [_EMPTY if b is None else bytes(b) for b in blobs]
    nnz = np.fromiter((int.from_bytes(b[4:8], "big") for b in given), np.int64, len(given))
    raw = np.frombuffer(b"".join(given), dtype=np.uint8)
    sizes = 12 + 8 * nnz
    starts = np.cumsum(sizes) - sizes  # where each blob begins (none for no blobs)
    total = int(nnz.sum())
    within = np.arange(total) - np.repeat(np.cumsum(nnz) - nnz, nnz)
    idx_at = np.repeat(starts + 12, nnz) + 4 * within
    val_at = idx_at + 4 * np.repeat(nnz, nnz)
    four = np.arange(4)
    indices = raw[idx_at[:, None] + four].copy().view(">i4").ravel().astype(np.int32)
    values = raw[val_at[:, None] + four].copy().view(">f4").ravel().astype(np.float64)
    return nnz, indices, values
