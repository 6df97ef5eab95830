"""Saving and loading a trained `RecModel` to a directory: arrays in model.npz, the rest in model.json."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from tagloop.tools.errors import InvalidInput
from tagloop.tools.recommender.model import RecModel, RecParams

FORMAT = 1


def save(model: RecModel, directory: Path) -> None:
    """Write the model into `directory` (created if needed); overwrites a previous model there."""
    directory.mkdir(parents=True, exist_ok=True)
    tv = model.item_tag_vectors.tocsr()
    np.savez_compressed(
        directory / "model.npz",
        item_vecs=model.item_vecs,
        fold_cf=model.fold_cf,
        fold_tag=model.fold_tag,
        tag_to_item=model.tag_to_item,
        idf=model.idf,
        popularity=model.popularity,
        tv_data=tv.data,
        tv_indices=tv.indices,
        tv_indptr=tv.indptr,
    )
    meta = {
        "format": FORMAT,
        "params": asdict(model.params),
        "item_ids": [str(i) for i in model.item_ids],
        "tags": [str(t) for t in model.tags],
        "cold_norm": model.cold_norm,
    }
    (directory / "model.json").write_text(json.dumps(meta), encoding="utf-8")


def load(directory: Path) -> RecModel:
    """Read a model written by `save`; a missing or foreign directory is an InvalidInput."""
    meta_path, arrays_path = directory / "model.json", directory / "model.npz"
    if not meta_path.exists() or not arrays_path.exists():
        raise InvalidInput(f"{directory}: no trained model here (expected model.json and model.npz)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise InvalidInput(f"{directory}: model format {meta.get('format')!r}, this tagloop reads {FORMAT}")
    with np.load(arrays_path) as arrays:
        item_ids = np.asarray(meta["item_ids"], dtype=object)
        tags = np.asarray(meta["tags"], dtype=object)
        tv = sp.csr_matrix(
            (arrays["tv_data"], arrays["tv_indices"], arrays["tv_indptr"]), shape=(len(item_ids), len(tags))
        )
        return RecModel(
            params=RecParams(**meta["params"]),
            item_ids=item_ids,
            tags=tags,
            item_vecs=arrays["item_vecs"],
            fold_cf=arrays["fold_cf"],
            fold_tag=arrays["fold_tag"],
            tag_to_item=arrays["tag_to_item"],
            item_tag_vectors=tv,
            idf=arrays["idf"],
            popularity=arrays["popularity"],
            cold_norm=float(meta.get("cold_norm", 1.0)),
        )
