"""Does the choice to search lean on what the model knows? Prints one JSON object.

For each model directory given: the probability it gives ``SEARCH`` as its first move alone with the
tool of the question's corpus (:func:`arena.environments.collab_qa.reading.search_probabilities`), on
every question of the train, test and ood splits, averaged over the facts the data marks known and
those it does not, and the gap (unknown minus known). Greedy play turns the probability into one move
everywhere when it stays on one side of a half; the gap says whether training moved the choice per
question or all together.

    python benchmarks/search_decision.py MODEL_DIR [MODEL_DIR ...] [key=value overrides of the quick start]
    python benchmarks/search_decision.py --helpers 2 MODEL_DIR ...   # also beside two helpers

The overrides name the knowledge config the models were built with (its world). ``--helpers N``
adds, under ``with_helpers``, the same beside N helpers with the asker holding its tool (the seat that
``asker_tool`` games train): a model selective there on train questions and not on test ones has
learnt its decisions per question rather than from what it knows.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def decision(model_dir: str, world, helpers: int = 0) -> dict:
    from arena.environments.collab_qa.reading import search_probabilities
    from arena.environments.collab_qa.world import cached_world

    out: dict = {}
    for split in ("train", "test", "ood"):
        questions = cached_world(world).split(split)
        p = search_probabilities(model_dir, world, questions, helpers=helpers)
        known = [x for x, q in zip(p, questions) if q.meta.get("known")]
        unknown = [x for x, q in zip(p, questions) if not q.meta.get("known")]
        out[split] = {
            "p_search_known": float(np.mean(known)) if known else None,
            "p_search_unknown": float(np.mean(unknown)) if unknown else None,
            "gap": float(np.mean(unknown) - np.mean(known)) if known and unknown else None,
            "n_known": len(known),
            "n_unknown": len(unknown),
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="model directories, then key=value overrides")
    ap.add_argument("--helpers", type=int, action="append", default=[], help="also measure beside this many helpers (asker holding its tool); repeatable")
    args = ap.parse_args(argv)
    from arena.environments.collab_qa.knowledge import paths_and_knowledge

    models, overrides, knowledge = paths_and_knowledge(args.models)
    world = knowledge.world
    started = time.perf_counter()
    report = {"benchmark": "search_decision", "overrides": overrides, "models": {m: decision(m, world) for m in models}}
    for m in models:
        if args.helpers:
            report["models"][m]["with_helpers"] = {str(h): decision(m, world, h) for h in args.helpers if h > 0}
    report["seconds"] = time.perf_counter() - started
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
