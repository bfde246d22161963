"""Rollout throughput: concurrent vs one-at-a-time episodes, and rollout vs raw batched generation.

Plays the same episodes (the tiny model against scripted bots in both shipped
games, under each game's default rules) once with 64 in flight and once one at
a time, then times the engine's raw ``generate_batch`` on the rollout's own
prompts at the same batch size and lengths. Prints one JSON object.

    python benchmarks/rollout_throughput.py [--episodes 192] [--concurrency 64] [--max-new-tokens 24]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time

import numpy as np
import torch

from arena.agents.catalog import make_fixed_policy
from arena.agents.llm import LLMAgent
from arena.engines.base import SamplingParams
from arena.engines.hf import HFEngine
from arena.models import resolve_model_path
from arena.records import Matchup
from arena.rollout import play_many
from arena.tiny import TinyModelConfig

#: the games whose text and bots make the tiny model (as configs/selfplay.yaml)
GAMES = ("negotiation-v0", "repeated_matrix-v0")
SEATINGS = [
    ("repeated_matrix-v0", {"player_0": "main", "player_1": "scripted/tit_for_tat"}),
    ("negotiation-v0", {"seller": "main", "buyer": "scripted/fair_buyer"}),
    ("negotiation-v0", {"seller": "scripted/fair_seller", "buyer": "main"}),
    ("repeated_matrix-v0", {"player_0": "scripted/grim_trigger", "player_1": "main"}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=192, help="episodes played each way (a round of a run)")
    ap.add_argument("--concurrency", type=int, default=64, help="episodes in flight at once in the concurrent run")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the raw generate baseline (best is kept)")
    args = ap.parse_args()

    path = resolve_model_path(None, TinyModelConfig(), games=GAMES)
    engine = HFEngine(path, max_batch_size=args.concurrency)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0)
    agent = LLMAgent(engine, sampling=sampling)
    matchups = [Matchup(game=SEATINGS[i % len(SEATINGS)][0], seed=i, seats=SEATINGS[i % len(SEATINGS)][1]) for i in range(args.episodes)]
    pools = {g: {"main": agent} for g, _ in SEATINGS}
    for g, seats in SEATINGS:
        for pid in seats.values():
            if pid != "main":
                pools[g][pid] = make_fixed_policy(pid, g)

    def play(concurrency: int):
        tokens0, batches0 = engine.stats.completion_tokens, engine.stats.batches
        t0 = time.perf_counter()
        eps = asyncio.run(play_many(matchups, lambda m: pools[m.game], concurrency=concurrency))
        dt = time.perf_counter() - t0
        return eps, dt, engine.stats.completion_tokens - tokens0, engine.stats.batches - batches0

    # warm-up (allocator, kernels) outside the timings
    asyncio.run(play_many(matchups[:8], lambda m: pools[m.game], concurrency=8))

    conc_eps, conc_s, conc_tokens, conc_batches = play(args.concurrency)
    seq_eps, seq_s, seq_tokens, _ = play(1)

    # raw batched generate on the rollout's own prompts, same batch size and max length
    prompts = [t.prompt_ids for ep in conc_eps for t in ep.turns if t.policy_id == "main"]
    batch = prompts[: args.concurrency]
    raw = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        outs = engine.generate_batch(batch, sampling, list(range(r * len(batch), (r + 1) * len(batch))))
        raw.append(sum(len(o.token_ids) for o in outs) / (time.perf_counter() - t0))
    raw_tps = max(raw)
    rollout_tps = conc_tokens / conc_s

    llm_turns = len(prompts)
    print(
        json.dumps(
            {
                "benchmark": "rollout_throughput",
                "episodes": args.episodes,
                "concurrency": args.concurrency,
                "llm_turns": llm_turns,
                "episodes_per_s_concurrent": round(len(conc_eps) / conc_s, 3),
                "episodes_per_s_sequential": round(len(seq_eps) / seq_s, 3),
                "speedup_concurrent_vs_sequential": round(seq_s / conc_s, 2),
                "rollout_tokens_per_s": round(rollout_tps, 1),
                "raw_generate_tokens_per_s": round(raw_tps, 1),
                "fraction_of_raw_generate": round(rollout_tps / raw_tps, 3),
                "mean_batch_size_concurrent": round(llm_turns / max(conc_batches, 1), 1),
                "seconds_concurrent": round(conc_s, 2),
                "seconds_sequential": round(seq_s, 2),
                "same_episodes_both_ways": [e.returns for e in conc_eps] == [e.returns for e in seq_eps],
                "mean_prompt_tokens": round(float(np.mean([len(p) for p in prompts])), 1),
                "max_new_tokens": args.max_new_tokens,
                "model_parameters": sum(p.numel() for p in engine.model.parameters()),
                "torch_threads": torch.get_num_threads(),
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
