"""Benchmark: tag recovery and tag embeddings on Last.fm-2k (../shared/data/lastfm-2k/split).

1. Splits item_tags.csv by hiding 30 % of each tagged artist's tags (seeded; artists with a single
   tag keep it), writes KNOWN/HELD CSVs to a temp dir, runs the `tagloop eval tagging` core on them with
   train.csv as interactions, and prints precision@5 / recall@10 for tagloop and the popular-tags
   baseline measured in the same run, with their ratio (goal: recall@10 ≥ 2.5× the baseline).
2. Learns PPMI-SVD tag embeddings from all item tag sets, prints the held-out co-occurrence AUC
   (hidden co-occurring pairs vs random pairs; random = 0.5) and a nearest-neighbour table.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/tagging.py [--seed 7] [--data DIR]

Numbers (seed 7, 10,701 artists; the README's table): precision@5 0.181 against 0.062 for the
popular tags (2.94×), recall@10 0.481 against 0.163 (2.96×, goal ≥ 2.5×); tag embeddings: held-out
co-occurrence AUC 0.793 over 32,541 hidden tag pairs.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tagloop.evals.tagging_eval import evaluate_tagging, read_rows
from tagloop.tools.tagging.embeddings import heldout_cooccurrence_auc, related_tags, tag_embeddings
from tagloop.tools.tagging.matrices import cooccurrence, item_tag_matrix
from tagloop.tools.tagging.tuning import hide_tags

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lastfm-2k" / "split"
PROBES = ("shoegaze", "hip-hop", "80s", "death metal", "female vocalists", "chillout", "post-rock", "jazz")


def write_split(split: Path, out: Path, seed: int) -> tuple[Path, Path]:
    full = item_tag_matrix(read_rows(split / "item_tags.csv", ("item_id", "tag"), "item_tags"))
    kept, hidden = hide_tags(full, 0.3, np.random.default_rng(seed))
    known_path, held_path = out / "known.csv", out / "held.csv"
    with known_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item_id", "tag", "weight"])
        for i, item in enumerate(kept.items):
            w.writerows((item, tag, weight) for tag, weight in kept.tags_of(i).items())
    with held_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item_id", "tag"])
        for i, tags in hidden.items():
            w.writerows((full.items[i], tag) for tag in sorted(tags))
    return known_path, held_path


def recovery(split: Path, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        known, held = write_split(split, Path(tmp), seed)
        start = time.perf_counter()
        report = evaluate_tagging(
            read_rows(known, ("item_id", "tag"), "known"),
            read_rows(held, ("item_id", "tag"), "held"),
            read_rows(split / "train.csv", ("user_id", "item_id"), "train"),
            seed=seed,
        )
        took = time.perf_counter() - start
    res = report.as_json()
    t, p = report.tagloop, report.popular_tags
    print(f"tag recovery on {res['n_items']} artists (seed {seed}, {took:.1f} s)")
    print(f"  {'':14}{'precision@5':>12}{'recall@10':>12}")
    print(f"  {'tagloop':14}{t['precision@5']:12.4f}{t['recall@10']:12.4f}")
    print(f"  {'popular_tags':14}{p['precision@5']:12.4f}{p['recall@10']:12.4f}")
    print(
        f"  {'ratio':14}{t['precision@5'] / p['precision@5']:11.2f}×{t['recall@10'] / p['recall@10']:11.2f}×"
        "   (goal: recall@10 ≥ 2.50×)"
    )
    print(f"  blend weights tuned on KNOWN: {res['blend_weights']}")


def embeddings(split: Path, seed: int) -> None:
    full = item_tag_matrix(read_rows(split / "item_tags.csv", ("item_id", "tag"), "item_tags"))
    cooc = cooccurrence(full.binary())
    score, n_pairs = heldout_cooccurrence_auc(cooc, 64, np.random.default_rng(seed))
    print(f"\nheld-out co-occurrence: AUC {score:.3f} over {n_pairs} hidden pairs (random pairs = 0.500)")
    emb = tag_embeddings(cooc, 64, np.random.default_rng(seed), min_count=5)
    print("\n| tag | nearest tags (cosine) |\n|---|---|")
    for probe in PROBES:
        if probe in full.tags:
            near = ", ".join(f"{t} ({c:.2f})" for t, c in related_tags(emb, full.tags, probe, 8))
            print(f"| {probe} | {near} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if not (args.data / "item_tags.csv").exists():
        sys.exit(f"data not found at {args.data}")
    recovery(args.data, args.seed)
    embeddings(args.data, args.seed)


if __name__ == "__main__":
    main()
