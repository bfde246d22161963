"""Does self-play teach the model the answers it was meant to search for? Prints one JSON object.

Collaborative QA marks each fact known or unknown by the data: the knowledge model was pre-trained on
the known ones. Self-play on a small world plays each train question many times, and a fact can be
learnt on the way: read off a search result again and again, or guessed right by luck and kept by
ReST. Then the data's "unknown" no longer says what the model knows, and not searching a train
question it has come to know is right. For each kept run directory (``csp_reproduction.py --keep``),
this reads:

* per training round, on the episodes of unknown facts: how many answered without a search, and how
  many of those were right (chance is about one in four for a town or an organism);
* closed-book accuracy (the model asked with no tool, greedy) on train and test questions, known and
  unknown facts, at the first and the last checkpoint.

    python benchmarks/qa_memorised.py RUN_DIR [RUN_DIR ...] [key=value overrides of the quick start]

A run directory holds ``episodes/train/round_*.jsonl`` and ``checkpoints/round_*/policies/main``. The
overrides name the knowledge config the models were built with (its world).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def unknown_rounds(run_dir: Path) -> list[dict]:
    """Per training round: unknown-fact episodes, those answered without a search, and those right."""
    out = []
    for f in sorted((run_dir / "episodes" / "train").glob("round_*.jsonl")):
        unknown = [m for m in (json.loads(line)["episode"]["metrics"] for line in f.open()) if m.get("known") == 0.0]
        blind = [m for m in unknown if m["searches"] == 0]
        right = sum(m["f1"] >= 0.99 for m in blind)
        out.append(
            {
                "round": int(f.stem.split("_")[1]),
                "unknown_episodes": len(unknown),
                "answered_without_search": len(blind),
                "right_without_search": right,
                "right_share": right / len(blind) if blind else None,
            }
        )
    return out


def closed_book_by_split(model_dir: Path, world) -> dict[str, float]:
    from arena.environments.collab_qa.knowledge import closed_book
    from arena.environments.collab_qa.world import cached_world

    out = {}
    for split in ("train", "test"):
        questions = cached_world(world).split(split)
        right = closed_book(model_dir, questions, world)
        for tag, known in (("known", True), ("unknown", False)):
            scores = [r for r, q in zip(right, questions) if bool(q.meta.get("known")) == known]
            out[f"{split}/{tag}"] = float(np.mean(scores)) if scores else None
    return out


def measure(run_dir: Path, world) -> dict:
    checkpoints = sorted((run_dir / "checkpoints").glob("round_*/policies/main"))
    if not checkpoints:
        raise SystemExit(f"{run_dir}: no checkpoints/round_*/policies/main (keep the runs with csp_reproduction.py --keep)")
    first, last = checkpoints[0], checkpoints[-1]
    return {
        "rounds": unknown_rounds(run_dir),
        "closed_book": {first.parent.parent.name: closed_book_by_split(first, world), last.parent.parent.name: closed_book_by_split(last, world)},
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories, then key=value overrides")
    args = ap.parse_args(argv)
    from arena.environments.collab_qa.knowledge import paths_and_knowledge

    paths, overrides, knowledge = paths_and_knowledge(args.runs)
    runs, world = [Path(r) for r in paths], knowledge.world
    started = time.perf_counter()
    report = {"benchmark": "qa_memorised", "overrides": overrides, "runs": {str(r): measure(r, world) for r in runs}}
    report["seconds"] = time.perf_counter() - started
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
