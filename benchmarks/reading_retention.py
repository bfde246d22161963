"""Does pre-training on the known facts wear reading down? Variants of stage 1 from one reading model: prints JSON.

The collaborative-QA build (environments.collab_qa.knowledge) reads first (stage 0), then learns the
world's known facts (stage 1). With the fresh-page reading recipe the redrawn reading probe was 0.875
right after reading and 0.51 after stage 1 (issue 13): a model that cannot read gains nothing from
searching. This builds stage 0 once (cached in ARENA_HOME like every build, keyed by the fields stage 0
reads) and runs stage 1 under each variant from it, then measures:

- ``probe_redrawn``: the redrawn reading probe (the model's own world, every value drawn anew), and
  the same items split by whether the model learns the entity's facts in stage 1 (``_known_entity``:
  the page contradicts what it was taught; ``_unknown_entity``: it does not);
- ``probe_unknown_facts``: reading the world's own pages of the unknown test and ood facts, the reads
  play needs (and per split: ``_test`` asks in a trained wording, ``_ood`` in the held-out one);
- ``closed_book``: closed-book accuracy per split and known / unknown fact (what stage 1 is for).

A variant is a comma-separated list of overrides of model.warm_start (``pretrain.lr=2e-3,pretrain_replay=1``).

    python benchmarks/reading_retention.py model.tiny.digit_pairs=true model.warm_start.reading_source=redrawn \\
        model.warm_start.fresh_reading.steps=3000 model.warm_start.fresh_reading.prompt_loss=1.0 \\
        --variant "" --variant "pretrain_replay=0.5" --variant "pretrain.lr=2e-3,pretrain_replay=1"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np


def deep_merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for k, v in changes.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_variant(text: str) -> dict:
    """``a.b=1,c=0.5`` -> ``{"a": {"b": 1}, "c": 0.5}`` (values parsed as JSON where they parse)."""
    out: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"variant item {item!r} is not key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def probes(model, tokenizer, items_redrawn, items_unknown, known_entities: set[str]) -> dict[str, float]:
    from arena.environments.collab_qa.reading import model_reads, score_reads

    reads = model_reads((model, tokenizer), items_redrawn)
    known = [(it, r) for it, r in zip(items_redrawn, reads) if it.question.meta["entity"] in known_entities]
    unknown = [(it, r) for it, r in zip(items_redrawn, reads) if it.question.meta["entity"] not in known_entities]

    def score(pairs):
        return score_reads([it for it, _ in pairs], [r for _, r in pairs]) if pairs else float("nan")

    unknown_reads = list(zip(items_unknown, model_reads((model, tokenizer), items_unknown)))
    return {
        "probe_redrawn": score_reads(items_redrawn, reads),
        "probe_redrawn_known_entity": score(known),
        "probe_redrawn_unknown_entity": score(unknown),
        "probe_unknown_facts": score(unknown_reads),
        # the test split asks in a trained wording, the ood split in the held-out one, about other kinds of entity
        **{f"probe_unknown_facts_{split}": score([(it, r) for it, r in unknown_reads if it.question.split == split]) for split in ("test", "ood")},
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", action="append", default=None, help="overrides of model.warm_start for stage 1 ('' : as configured)")
    ap.add_argument("--probe-items", type=int, default=200)
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the quick-start config")
    args = ap.parse_args(argv)

    from arena.config import load_config
    from arena.environments.collab_qa.knowledge import (
        READING_FIELDS,
        READING_FILE,
        KnowledgeConfig,
        _closed_book_summary,
        _load,
        _train,
        cached_reading_model,
        closed_book_answers,
        knowledge_examples,
        pretrain_examples,
        qa_base_model,
        reading_config,
        reading_examples,
    )
    from arena.environments.collab_qa.reading import probe_items
    from arena.environments.collab_qa.world import cached_world
    from arena.tiny import default_cache_dir

    started = time.perf_counter()
    run_cfg = load_config(None, args.overrides)
    base_cfg = run_cfg.model.warm_start
    if not isinstance(base_cfg, KnowledgeConfig):
        raise SystemExit("model.warm_start must be the knowledge recipe (the quick start's)")
    variants = [parse_variant(v) for v in (args.variant or [""])]
    configs = [KnowledgeConfig.model_validate(deep_merge(base_cfg.model_dump(), v)) for v in variants]  # all checked before work
    for text, cfg in zip(args.variant or [""], configs):
        if reading_config(cfg) != reading_config(base_cfg):
            raise SystemExit(f"variant {text!r} changes stage 0 (its seed, or one of {sorted(READING_FIELDS)}): give it as an override instead")
    cache = default_cache_dir()
    base = qa_base_model(run_cfg.model.tiny, base_cfg.world, cache)
    print("reading (stage 0; cached after the first build)", file=sys.stderr, flush=True)
    read_dir = cached_reading_model(base, base_cfg, cache)
    read_meta = json.loads((read_dir / READING_FILE).read_text())

    ds = cached_world(base_cfg.world)
    known_entities = {f.entity for f in ds.facts if f.known}
    items_redrawn = probe_items(base_cfg, "redrawn", args.probe_items)
    items_unknown = probe_items(base_cfg, "unknown")
    questions = list(ds.questions)

    model, tokenizer, agent = _load(read_dir)
    after_reading = probes(model, tokenizer, items_redrawn, items_unknown, known_entities)
    reading = reading_examples(base_cfg, tokenizer, agent.prompt_ids)
    rows = []
    for text, cfg in zip(args.variant or [""], configs):
        print(f"stage 1 variant {text or '(as configured)'}", file=sys.stderr, flush=True)
        model, tokenizer, agent = _load(read_dir)
        tick = time.perf_counter()
        knowledge = knowledge_examples(cfg, tokenizer, agent.prompt_ids)
        mixed = pretrain_examples(cfg, knowledge, reading)
        losses = _train(model, mixed, cfg.pretrain, cfg, tokenizer, cfg.seed + 1, "knowledge")
        seconds = time.perf_counter() - tick
        row = {
            "variant": text,
            "pretrain": cfg.pretrain.model_dump(),
            "pretrain_replay": cfg.pretrain_replay,
            "examples": len(mixed),
            "pretrain_loss": [losses[0], float(np.mean(losses[-10:]))],
            "pretrain_s": seconds,
            **probes(model, tokenizer, items_redrawn, items_unknown, known_entities),
            "closed_book": _closed_book_summary(closed_book_answers((model, tokenizer), questions, cfg.world), questions),
        }
        print(f"row {json.dumps(row)}", file=sys.stderr, flush=True)
        rows.append(row)
    report = {
        "benchmark": "reading_retention",
        "overrides": args.overrides,
        "reading_model": read_dir.name,
        "reading_s": read_meta["reading_s"],
        "reading_loss": read_meta["reading_loss"],
        "probe_items": {"redrawn": len(items_redrawn), "unknown_facts": len(items_unknown)},
        "after_reading": after_reading,
        "variants": rows,
        "total_seconds": time.perf_counter() - started,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
