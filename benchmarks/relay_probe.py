"""The relay probe of collaborative-QA models, hop by hop, in both wordings: prints one JSON object.

A search through a helper pays only if each hop of its answer holds (environments.collab_qa.reading):
the asker writes the question to a helper (``ask``), the helper searches it (``query``) and reads the
page (``reply``), the asker answers what the helper replied (``relay``); alone, the asker searches the
question itself (``search``). For each model directory given, exact match per hop on the model's world
redrawn, asked in the trained wordings (the test split's) and in the held-out one (the ood split's),
greedy, plus the same scores split by whether the data marks the entity known and by attribute, and a
few of the relay hop's misses.

    python benchmarks/relay_probe.py MODEL_DIR [MODEL_DIR ...] [--limit 150] [key=value overrides of the quick start]

The overrides name the knowledge config the models were built with (its world and ``qa_templates``).
"""

from __future__ import annotations

import argparse
import collections
import json
import time


def probe(model_dir: str, cfg, limit: int) -> dict:
    from arena.environments.collab_qa.reading import RELAY_TOKENS, _first_line, model_reads, relay_items, score_hops
    from arena.environments.collab_qa.rules import best_score
    from arena.environments.collab_qa.world import cached_world

    known = {f.entity for f in cached_world(cfg.world).facts if f.known}
    out: dict = {}
    for wording in ("trained", "held_out"):
        items = relay_items(cfg, limit, wording=wording)
        reads = model_reads(model_dir, items, max_new_tokens=RELAY_TOKENS)
        groups: dict[str, list[float]] = collections.defaultdict(list)
        for it, r in zip(items, reads):
            right = best_score(_first_line(r), it.gold)[1]
            entity = it.question.meta["entity"]
            groups[f"{it.hop}/{'known' if entity in known else 'unknown'}_entity"].append(right)
            groups[f"{it.hop}/{it.question.meta['attribute']}"].append(right)
        misses = [
            {"gold": it.gold[0], "wrote": _first_line(r)} for it, r in zip(items, reads) if it.hop == "relay" and not best_score(_first_line(r), it.gold)[1]
        ]
        out[wording] = {
            "hops": score_hops(items, reads),
            "split": {k: {"exact_match": sum(v) / len(v), "n": len(v)} for k, v in sorted(groups.items())},
            "relay_misses": misses[:10],
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="model directories, then key=value overrides")
    ap.add_argument("--limit", type=int, default=150, help="facts per wording")
    args = ap.parse_args(argv)
    from arena.environments.collab_qa.knowledge import paths_and_knowledge

    models, overrides, cfg = paths_and_knowledge(args.models)
    started = time.perf_counter()
    report = {"benchmark": "relay_probe", "limit": args.limit, "overrides": overrides, "models": {m: probe(m, cfg, args.limit) for m in models}}
    report["seconds"] = time.perf_counter() - started
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
