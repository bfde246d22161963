"""Can the collaborative-QA model learn to read? The reading probe along a fresh-page reading run: prints JSON.

Issue 13's blocker: a model that cannot read a page it never saw gains nothing from searching. This
trains the quick start's base model (its shape and QA tokenizer, no knowledge yet) on fresh-page
reading (environments.collab_qa.reading: every example a fact of a newly generated world, searched
with the game's BM25, answered off the page) and measures the reading probe every ``--chunk`` steps:
exact match, forced to answer right after the right search, on 200 facts of held-out worlds and on
the quick-start world's unknown facts.

``--compact-share``: the share of examples shown in a compact prompt (the question and the search
results in the chat template, about 60% of the game prompt's tokens) instead of the game's own prompt;
the probe always reads the game's prompt.

    python benchmarks/reading_curve.py                                   # 2,500 steps, the game's prompts
    python benchmarks/reading_curve.py --compact-share 0.8 --out benchmarks/results/reading-curve-compact.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def page_position_breakdown(items, reads) -> dict:
    """The last probe's exact match by where the asked fact's page is among the search results (first or
    later), and how many wrong reads wrote another result's value of the asked attribute (the value of
    another entity, or of another page): whether the model copies from the right page or from the first
    page that states a value of the asked kind."""
    from arena.environments.collab_qa.reading import _first_line, result_lines, score_reads
    from arena.environments.collab_qa.world import extract_answer

    groups: dict[str, list] = {"first": [], "later": []}
    other_value = 0
    for it, read in zip(items, reads):
        q = it.question
        results = result_lines(it.observation)
        values = [extract_answer(r, q.meta["entity"], q.meta["attribute"]) for r in results]
        groups["first" if values and values[0] == q.answers[0] else "later"].append((it, read))
        wrote = _first_line(read)
        stated = {v for line in results for v in _attribute_values(line, q.meta["attribute"])} - {q.answers[0]}
        other_value += wrote != q.answers[0] and wrote in stated
    out = {k: {"n": len(g), "exact": score_reads([it for it, _ in g], [r for _, r in g]) if g else None} for k, g in groups.items()}
    out["wrong_reads_that_are_another_results_value"] = other_value
    wrong = [(it, read) for it, read in zip(items, reads) if score_reads([it], [read]) < 1]
    out["wrong_reads"] = [{"question": it.question.question, "gold": it.question.answers[0], "read": read.strip()[:60]} for it, read in wrong[:12]]
    return out


def _attribute_values(line: str, attribute: str) -> list[str]:
    """The value of ``attribute`` that the result ``line`` states for the entity its page is about (none or one)."""
    import re

    from arena.environments.collab_qa.world import extract_answer

    head = re.match(r"\[private\]\s+\d+\. \(\S+\) (?:Notes on )?([^:]+):", line)
    names = {head.group(1).strip()} if head else set()
    found = [extract_answer(line, name, attribute) for name in names]
    return [v for v in found if v]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--chunk", type=int, default=500, help="steps between probes (each chunk a cosine schedule from --lr to 10%%)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--prompt-loss", type=float, default=0.0, help="weight of next-token loss on the prompt beside the answer's")
    ap.add_argument("--layers", type=int, default=2, help="the quick start's model has 2")
    ap.add_argument("--hidden", type=int, help="hidden size (the quick start's: 128); the MLP is 4x as wide")
    ap.add_argument("--heads", type=int, help="attention heads (the quick start's: 4)")
    ap.add_argument("--split-digits", action=argparse.BooleanOptionalAction, default=None, help="model.tiny.split_digits (default: the quick start's)")
    ap.add_argument("--number-tokens", type=int, nargs=2, metavar=("LOW", "HIGH"), help="model.tiny.number_tokens: each year a whole token")
    ap.add_argument("--digit-pairs", action="store_true", help="model.tiny.digit_pairs: digits cut in pairs, a year two tokens")
    ap.add_argument("--examples", type=int, default=20000, help="distinct fresh pages (drawn from without replacement, then again)")
    ap.add_argument("--compact-share", type=float, default=0.0)
    ap.add_argument(
        "--source", choices=["fresh", "redrawn"], default="fresh", help="fresh worlds (new names), or the model's own world with every value drawn anew"
    )
    ap.add_argument("--new-names", type=float, default=0.0, help="redrawn: share of name values (birthplace, source, region) newly generated")
    ap.add_argument("--wide-years", type=float, default=0.0, help="redrawn: share of years drawn from any century (100-2999)")
    ap.add_argument("--seed", type=int, default=0, help="the model's initial weights, the pages drawn and the batch order (the probe stays the same)")
    ap.add_argument("--probe-items", type=int, default=200)
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--save", type=Path, help="save the trained model and its tokenizer here")
    ap.add_argument("--init", type=Path, help="go on training a model saved by --save (its shape and tokenizer; the shape flags are ignored)")
    args = ap.parse_args()

    from arena.agents.base import PlayerView
    from arena.config import QUICK_START
    from arena.environments.collab_qa.knowledge import KnowledgeConfig, Stage, _chat, _load, _train, qa_base_model
    from arena.environments.collab_qa.reading import (
        FRESH_SEED,
        GAME,
        ProbeItem,
        _take,
        model_reads,
        probe_items,
        result_lines,
        score_reads,
        searched_reads,
    )
    from arena.tiny import TinyModelConfig
    from arena.trainers.imitation import end_token_id

    cfg = KnowledgeConfig.model_validate({**QUICK_START["model"]["warm_start"], "seed": args.seed})
    shape = {**QUICK_START["model"]["tiny"], "num_layers": args.layers, "seed": args.seed}
    if args.hidden:
        shape.update(hidden_size=args.hidden, intermediate_size=4 * args.hidden)
    if args.heads:
        shape["num_heads"] = args.heads
    if args.split_digits is not None:
        shape["split_digits"] = args.split_digits
    if args.digit_pairs:
        shape["digit_pairs"] = True
    if args.number_tokens:
        shape["number_tokens"] = tuple(args.number_tokens)
    tiny = TinyModelConfig.model_validate(shape)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="arena-reading-") as home:
        model, tok, agent = _load(args.init or qa_base_model(tiny, cfg.world, home))
    end = end_token_id(tok)
    rng = np.random.default_rng(cfg.seed)
    examples = []
    for q, keyword, seat, obs in _take(
        searched_reads(cfg.world, FRESH_SEED, cfg.qa_templates, cfg.seed + 11, args.source, args.new_names, args.wide_years), args.examples
    ):
        if rng.random() < args.compact_share:
            results = result_lines(obs)
            prompt = _chat(tok, "\n".join([f"[private] Question: {q.question}", *results]))
        else:
            prompt = list(agent.prompt_ids(PlayerView(game=GAME, player=seat, observation=obs)))
        examples.append((prompt, tok.encode(f"{keyword}: {q.answers[0]}", add_special_tokens=False) + [end]))
    probes = {facts: probe_items(cfg, facts, args.probe_items) for facts in ("held_out", "redrawn", "unknown")}
    rows, done = [], 0
    while done < args.steps:
        tick = time.perf_counter()
        losses = _train(
            model, examples, Stage(steps=args.chunk, batch_size=args.batch_size, lr=args.lr, prompt_loss=args.prompt_loss), cfg, tok, cfg.seed + 100 + len(rows)
        )
        done += args.chunk
        train_s = time.perf_counter() - tick
        model.eval()
        reads = {facts: model_reads((model, tok), items) for facts, items in probes.items()}
        rows.append(
            {
                "steps": done,
                "loss": float(np.mean(losses[-20:])),
                **{f"probe_{facts}": score_reads(probes[facts], r) for facts, r in reads.items()},
                "train_seconds": round(train_s, 1),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    by_attribute = {}  # the last probe's exact match per attribute: which values the model copies, which it does not
    for facts, items in probes.items():
        groups: dict[str, list[tuple[ProbeItem, str]]] = {}
        for it, r in zip(items, reads[facts]):
            groups.setdefault(it.question.meta["attribute"], []).append((it, r))
        by_attribute[facts] = {a: {"n": len(g), "exact": score_reads([it for it, _ in g], [r for _, r in g])} for a, g in sorted(groups.items())}
    by_position = {facts: page_position_breakdown(items, reads[facts]) for facts, items in probes.items()}
    if args.save:
        model.save_pretrained(args.save)
        tok.save_pretrained(args.save)
    out = {
        "benchmark": "reading_curve",
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model_parameters": sum(p.numel() for p in model.parameters()),
        "mean_prompt_tokens": round(float(np.mean([len(p) for p, _ in examples])), 1),
        **{f"probe_{facts}_items": len(items) for facts, items in probes.items()},
        "target": 0.9,
        "rows": rows,
        "last_probe_by_attribute": by_attribute,
        "last_probe_by_page_position": by_position,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(out, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
