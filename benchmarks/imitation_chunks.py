"""Imitation steps in length chunks against one padded batch: prints one JSON object.

A batch of the collaborative-QA model's training mixes short closed-book questions (~60 tokens) with
game prompts after a search (~300-450). Padded as one, every row costs the longest row's positions;
:func:`arena.trainers.imitation.batch_step` runs the batch in chunks of similar length
(:func:`~arena.trainers.imitation.length_chunks`) and sums their gradients, so the step is the same step.

On the quick start's model and world (the tiny model of ``model.tiny``, a tokenizer trained on the world
built on the spot, random weights: the cost of a step does not depend on them), for two stages of the
knowledge build: ``knowledge`` (closed-book and in-game facts with reading replayed) and ``protocol``
(teacher demonstrations with both replayed), the seconds per step with one padded batch and in
chunks, the token positions each computes, and the loss curves of both (equal up to rounding). Then the
cost of a forward and backward pass by rows and width, which sets ``CHUNK_OVERHEAD``.

    python benchmarks/imitation_chunks.py            # 30 steps a stage and mode, 1 thread
    python benchmarks/imitation_chunks.py --steps 60 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time

import numpy as np
import torch


def timed_steps(model, examples, cfg, pad_id: int, overhead: int) -> dict:
    """``cfg.steps`` steps of :func:`train_imitation` on a copy of ``model``, with chunks split at ``overhead``."""
    from arena.trainers import imitation

    saved = imitation.CHUNK_OVERHEAD
    imitation.CHUNK_OVERHEAD = overhead
    positions = 0
    try:
        gen = torch.Generator().manual_seed(cfg.seed)  # the batches train_imitation draws, to count their positions
        batches = imitation.shuffled_batches(len(examples), cfg.batch_size, gen)
        for _ in range(cfg.steps):
            rows = [examples[i] for i in next(batches)]
            lengths = [min(len(p), cfg.max_len) + len(t) for p, t in rows]
            positions += sum(max(lengths[i] for i in c) * len(c) for c in imitation.length_chunks(lengths))
        start = time.perf_counter()
        losses = imitation.train_imitation(copy.deepcopy(model), examples, cfg, pad_id=pad_id)
        seconds = time.perf_counter() - start
    finally:
        imitation.CHUNK_OVERHEAD = saved
    return {"s_per_step": seconds / cfg.steps, "positions_per_step": positions / cfg.steps, "losses": losses}


def pass_cost(model, rows: int, width: int, repeats: int = 5) -> float:
    """Median seconds of one forward and backward pass over ``rows`` x ``width`` tokens (the target at the end)."""
    ids = torch.randint(10, 100, (rows, width))
    mask = torch.ones_like(ids)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=torch.arange(width - 8, width - 1)).logits
        out.float().logsumexp(-1).mean().backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the test suite gives each of its two workers one)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from arena.config import QUICK_START
    from arena.environments.collab_qa.bots import FromMemory
    from arena.environments.collab_qa.knowledge import (
        KnowledgeConfig,
        _load,
        knowledge_examples,
        pretrain_examples,
        qa_base_model,
        reading_examples,
        teacher_demonstrations,
        with_replay,
    )
    from arena.tiny import TinyModelConfig
    from arena.trainers.imitation import CHUNK_OVERHEAD, ImitationConfig, end_token_id, imitation_examples

    cfg = KnowledgeConfig.model_validate(QUICK_START["model"]["warm_start"])
    tiny = TinyModelConfig.model_validate(QUICK_START["model"]["tiny"])
    with tempfile.TemporaryDirectory(prefix="chunks-") as tmp:
        model, tok, agent = _load(qa_base_model(tiny, cfg.world, tmp))
    pad = tok.pad_token_id if tok.pad_token_id is not None else end_token_id(tok)
    knowledge = knowledge_examples(cfg, tok, agent.prompt_ids)
    reading = reading_examples(cfg, tok, agent.prompt_ids)
    episodes = teacher_demonstrations(cfg, FromMemory({}, default_recall=cfg.memory_rate, hedge=cfg.hedge_rate), cfg.seed)
    demos = imitation_examples(episodes, tok, render=agent.prompt_ids)
    stages = {
        "knowledge": (pretrain_examples(cfg, knowledge, reading), cfg.pretrain),
        "protocol": (with_replay(demos, [knowledge, reading], cfg.replay, cfg.seed + 3), cfg.warm_start),
    }
    out: dict = {"benchmark": "imitation_chunks", "threads": args.threads, "steps": args.steps, "chunk_overhead": CHUNK_OVERHEAD, "stages": {}}
    for name, (examples, stage) in stages.items():
        icfg = ImitationConfig(steps=args.steps, batch_size=stage.batch_size, lr=stage.lr, max_len=cfg.max_len, seed=1)
        one = timed_steps(model, examples, icfg, pad, overhead=10**12)  # never split: the batch padded as one
        chunked = timed_steps(model, examples, icfg, pad, overhead=CHUNK_OVERHEAD)
        out["stages"][name] = {
            "examples": len(examples),
            "tokens_per_example": float(np.mean([len(p) + len(t) for p, t in examples])),
            "one_batch": {k: v for k, v in one.items() if k != "losses"},
            "chunked": {k: v for k, v in chunked.items() if k != "losses"},
            "speedup": one["s_per_step"] / chunked["s_per_step"],
            "max_loss_difference": float(np.max(np.abs(np.array(one["losses"]) - np.array(chunked["losses"])))),
        }
        print(f"{name}: {json.dumps(out['stages'][name])}", file=__import__("sys").stderr, flush=True)
    model.train()
    shapes = [(1, 64), (1, 400), (8, 64), (8, 400), (32, 64), (32, 400)]
    costs = {f"{r}x{w}": pass_cost(model, r, w) for r, w in shapes}
    # one short row's pass against the same positions inside a wide batch: what a pass costs beyond its
    # positions (a least-squares line fits badly: attention makes long rows dearer per position)
    per_position = costs["32x64"] / (32 * 64)
    out["pass_seconds"] = costs
    out["pass_overhead_positions"] = costs["1x64"] / per_position - 64
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
