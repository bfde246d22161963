"""Does the choice to search lean on what the model knows? Prints one JSON object.

For each model directory given: the probability it gives ``SEARCH`` as its first move alone with the
tool of the question's corpus (:func:`arena.environments.collab_qa.reading.search_probabilities`), on
every question of the train, test and ood splits, averaged over the facts the data marks known and
those it does not, and the gap (unknown minus known). Greedy play turns the probability into one move
everywhere when it stays on one side of a half; the gap says whether training moved the choice per
question or all together.

    python benchmarks/search_decision.py MODEL_DIR [MODEL_DIR ...] [key=value overrides of the quick start]
    python benchmarks/search_decision.py --helpers 2 MODEL_DIR ...   # also beside two helpers

The overrides name the knowledge config the models were built with (its world); ``--config FILE``
starts them from a run config instead of the quick start's. ``--helpers N``
adds, under ``with_helpers``, the same beside N helpers with the asker holding its tool (the seat that
``asker_tool`` games train): a model selective there on train questions and not on test ones has
learnt its decisions per question rather than from what it knows. Each split also has ``auroc`` (of
the probability between unknown and known facts: 0.5 is no lean) and ``by_entity``: the same on the
questions about an entity some train question asks about (``trained``) and about the others
(``other``): a choice learnt per entity carries to the first and not to the second.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _lean(p: list[float], known: list[bool]) -> dict:
    """Mean P(SEARCH) on known and unknown facts, their gap, and the AUROC between them (None without both)."""
    from arena.environments.collab_qa.evaluation import auroc

    k = [x for x, kn in zip(p, known) if kn]
    u = [x for x, kn in zip(p, known) if not kn]
    both = bool(k and u)
    return {
        "p_search_known": float(np.mean(k)) if k else None,
        "p_search_unknown": float(np.mean(u)) if u else None,
        "gap": float(np.mean(u) - np.mean(k)) if both else None,
        "auroc": auroc(p, [0.0 if kn else 1.0 for kn in known]) if both else None,
        "n_known": len(k),
        "n_unknown": len(u),
    }


def lean_by_entity(ds, split: str, p: list[float]) -> dict:
    """:func:`_lean` of the probabilities ``p`` of the questions of ``split`` of ``ds``, over all of them and
    ``by_entity``: those about an entity some train question asks about (``trained``) and the others."""
    trained = {q.meta.get("entity") for q in ds.split("train")}
    questions = ds.split(split)
    known = [bool(q.meta.get("known")) for q in questions]
    out = _lean(p, known)
    out["by_entity"] = {}
    for tag, wanted in (("trained", True), ("other", False)):
        keep = [(q.meta.get("entity") in trained) == wanted for q in questions]
        out["by_entity"][tag] = _lean([x for x, k in zip(p, keep) if k], [kn for kn, k in zip(known, keep) if k])
    return out


def decision(model_dir: str, world, helpers: int = 0, game_kwargs: dict | None = None) -> dict:
    from arena.environments.collab_qa.reading import search_probabilities
    from arena.environments.collab_qa.world import cached_world

    ds = cached_world(world)
    splits = ("train", "test", "ood")
    return {s: lean_by_entity(ds, s, search_probabilities(model_dir, world, ds.split(s), helpers=helpers, game_kwargs=game_kwargs)) for s in splits}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="model directories, then key=value overrides")
    ap.add_argument("--helpers", type=int, action="append", default=[], help="also measure beside this many helpers (asker holding its tool); repeatable")
    ap.add_argument(
        "--config", default=None, help="a run config the models were trained with (its knowledge warm start and its first collab_qa entry's options)"
    )
    args = ap.parse_args(argv)
    from arena.environments.collab_qa.evaluation import demonstration_game
    from arena.environments.collab_qa.knowledge import paths_and_knowledge

    models, overrides, knowledge = paths_and_knowledge(args.models, args.config)
    world = knowledge.world
    game = {}
    if args.config:  # the prompts the run played (its search cost, ...)
        from arena.config import load_config

        game = demonstration_game(load_config(args.config, overrides))
    started = time.perf_counter()
    report = {"benchmark": "search_decision", "config": args.config, "overrides": overrides, "models": {m: decision(m, world, 0, game) for m in models}}
    for m in models:
        if args.helpers:
            report["models"][m]["with_helpers"] = {str(h): decision(m, world, h, game) for h in args.helpers if h > 0}
    report["seconds"] = time.perf_counter() - started
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
