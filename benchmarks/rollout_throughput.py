"""Rollout throughput: concurrent vs one-at-a-time episodes, rollout vs raw batched generation, and
mixed-adapter batches vs single-adapter ones.

Plays the same episodes (the tiny model against scripted bots in both shipped games, under each
game's default rules) with ``--concurrency`` in flight and one at a time, and times, each
``--repeats`` times (interleaved, so that load drifting on a shared machine hits every measurement
alike; the median, min, max and every value are reported, and the ratios come from the medians,
with the per-repeat ratios beside them):

- ``concurrent`` / ``sequential``: wall time of playing the episodes; the speedup is their ratio.
- ``raw_generate``: the engine's ``generate_batch`` called back to back, on the engine's own thread
  (where the rollout's batches ran), on exactly the batches the rollout's engine formed during that repeat's concurrent play (recorded as the base class's
  batcher hands them over: same prompts, same batch sizes, same sampling, same per-row seeds).
  Because a row's sampling depends on its seed alone, the replay generates the very same
  completions, stopping early at the same end-of-turn tokens: both sides count the same tokens
  (``replay_identical`` checks it), so the fraction ``rollout / raw`` compares the time to do the
  same generation work and cannot exceed 1 beyond noise. What it shows is the time the rollout
  spends outside the engine's forward passes (games, bots, prompt rendering, waiting for a batch
  to form) as a share of the whole.
- ``mixed_adapters`` / ``single_adapter``: an engine with 8 random LoRA adapters on the same base
  generates one batch (the largest the rollout formed) with the rows routed round-robin to the 8
  adapters, and the same batch with every row routed to one adapter; target: mixed >= 0.9 of single.
  Different adapters sample different tokens, so this engine ignores end-of-turn tokens: every row
  decodes exactly ``--max-new-tokens`` tokens in both cases and the two do the same work. ``base``
  is the same batch on the plain model (no adapters), for what LoRA itself costs.

``seconds_first_concurrent_play_cold`` is the first concurrent play, timed before the main thread
has run any parallel torch op and kept out of the medians: on two cores here the engine thread's
batches ran ~40x slower until then (two OpenMP thread teams; ``OMP_WAIT_POLICY=PASSIVE`` or one
thread avoided it too), which a run's first evaluation would meet.

Prints one JSON object on stdout (progress on stderr).

    python benchmarks/rollout_throughput.py [--episodes 192] [--concurrency 64] [--max-new-tokens 24] [--repeats 3] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from policies_memory import random_llama  # benchmarks/ is on the path of a script run from it
from transformers import AutoModelForCausalLM

from arena.adapters import LoraSpec
from arena.agents.catalog import make_fixed_policy
from arena.agents.llm import LLMAgent
from arena.engines.base import Completion, Engine, SamplingParams
from arena.engines.hf import HFEngine
from arena.models import resolve_model_path
from arena.records import Episode, Matchup
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
#: adapters in the mixed-adapter batch
MIXED_ADAPTERS = 8


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def spread(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """One measurement repeated: its median, min, max and every value."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "values": [round(v, digits) for v in values],
    }


# ----- the batches an engine forms -------------------------------------------------------------
@dataclass
class Batch:
    """One batch the engine's batcher formed: what went in, and the token ids that came out."""

    prompts: list[list[int]]
    params: SamplingParams
    seeds: list[int]
    adapters: list[str | None] | None
    completions: list[list[int]]

    @property
    def tokens(self) -> int:
        return sum(map(len, self.completions))


class BatchRecorder:
    """Records every batch an engine's batcher forms, by wrapping ``timed_generate_batch`` on the
    engine instance (the base class's batcher calls it once per batch); :meth:`close` unwraps it.
    The engine's behaviour is unchanged."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.batches: list[Batch] = []
        self._inner = engine.timed_generate_batch
        engine.timed_generate_batch = self._record  # type: ignore[method-assign]

    def _record(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int], adapters: list[str | None] | None = None) -> list[Completion]:
        out = self._inner(prompts, params, seeds, adapters)
        self.batches.append(Batch([list(p) for p in prompts], params, list(seeds), adapters, [list(c.token_ids) for c in out]))
        return out

    def take(self) -> list[Batch]:
        batches, self.batches = self.batches, []
        return batches

    def close(self) -> None:
        del self.engine.timed_generate_batch


def replay(engine: Engine, batches: Sequence[Batch]) -> tuple[float, int, bool]:
    """Generate ``batches`` back to back with ``generate_batch`` on the engine's own thread, where the
    rollout's batches ran: (seconds, completion tokens, whether every completion equals the recorded one)."""
    return asyncio.run(engine.run_in_engine_thread(_replay, engine, batches))


def _replay(engine: Engine, batches: Sequence[Batch]) -> tuple[float, int, bool]:
    identical = True
    tokens = 0
    t0 = time.perf_counter()
    for b in batches:
        if b.adapters is None:
            outs = engine.generate_batch(b.prompts, b.params, b.seeds)
        else:
            outs = engine.generate_batch(b.prompts, b.params, b.seeds, adapters=b.adapters)
        tokens += sum(len(o.token_ids) for o in outs)
        identical = identical and [list(o.token_ids) for o in outs] == b.completions
    return time.perf_counter() - t0, tokens, identical


# ----- the episodes ----------------------------------------------------------------------------
def matchups_and_pools(agent: LLMAgent, episodes: int) -> tuple[list[Matchup], Callable[[Matchup], dict]]:
    """``episodes`` matchups cycling through :data:`SEATINGS`, and the policies of each game."""
    matchups = [Matchup(game=SEATINGS[i % len(SEATINGS)][0], seed=i, seats=SEATINGS[i % len(SEATINGS)][1]) for i in range(episodes)]
    pools: dict[str, dict[str, Any]] = {g: {"main": agent} for g, _ in SEATINGS}
    for g, seats in SEATINGS:
        for pid in seats.values():
            if pid != "main":
                pools[g][pid] = make_fixed_policy(pid, g)
    return matchups, lambda m: pools[m.game]


def play_timed(matchups: list[Matchup], pools: Callable[[Matchup], dict], concurrency: int) -> tuple[list[Episode], float]:
    t0 = time.perf_counter()
    eps = asyncio.run(play_many(matchups, pools, concurrency=concurrency))
    return eps, time.perf_counter() - t0


# ----- mixed adapters --------------------------------------------------------------------------
def adapter_batches(model_path: str | Path, prompts: list[list[int]], max_new_tokens: int, repeats: int) -> dict[str, Any]:
    """One batch of ``prompts`` through 8 LoRA adapters at once against one adapter (and the plain model), on HF engines."""
    names = [f"adapter_{i}" for i in range(MIXED_ADAPTERS)]
    plain = HFEngine(model_path, max_batch_size=len(prompts))
    lora = HFEngine(model_path, max_batch_size=len(prompts))
    lora.add_adapters(LoraSpec(), names, random_init=True)
    routes = {
        "mixed_adapters": (lora, [names[i % len(names)] for i in range(len(prompts))]),
        "single_adapter": (lora, [names[0]] * len(prompts)),
        "base": (plain, None),
    }
    return compare_routes(routes, prompts, max_new_tokens, repeats)


def compare_routes(
    routes: dict[str, tuple[Any, list[str] | None]], prompts: list[list[int]], max_new_tokens: int, repeats: int, before: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Tokens per second of one batch of ``prompts`` sent each way of ``routes`` (name -> (engine, each
    row's adapter or None)), ``repeats`` times, alternating which goes first; ``before`` runs before
    each timed call. End-of-turn tokens are ignored, so every row decodes exactly ``max_new_tokens``
    and every way does the same work (different adapters would stop at different places)."""
    engines = {id(e): e for e, _ in routes.values()}.values()
    saved = [(e, e.eos_token_ids) for e in engines]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0)
    seeds = list(range(len(prompts)))

    def once(engine: Any, adapters: list[str] | None) -> float:
        if before is not None:
            before()
        t0 = time.perf_counter()
        outs = engine.generate_batch(prompts, params, seeds, adapters=adapters) if adapters else engine.generate_batch(prompts, params, seeds)
        return sum(len(o.token_ids) for o in outs) / (time.perf_counter() - t0)

    tps: dict[str, list[float]] = {k: [] for k in routes}
    try:
        for e in engines:
            e.eos_token_ids = ()
        for engine, adapters in routes.values():  # warm-up: routing, allocator, kernels for these shapes
            once(engine, adapters)
        for r in range(repeats):
            order = list(routes) if r % 2 == 0 else list(reversed(routes))  # no way always goes first
            for key in order:
                tps[key].append(once(*routes[key]))
            log(f"adapters repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {tps[k][-1]:.0f} tok/s" for k in routes))
    finally:
        for e, eos in saved:
            e.eos_token_ids = eos
    out: dict[str, Any] = {
        "adapters": len({a for _, adapters in routes.values() for a in adapters or ()}),
        "batch_size": len(prompts),
        "tokens_per_row": max_new_tokens,
        **{f"{k}_tokens_per_s": spread(v, 1) for k, v in tps.items()},
    }
    if "mixed_adapters" in tps and "single_adapter" in tps:
        out["mixed_over_single"] = round(statistics.median(tps["mixed_adapters"]) / statistics.median(tps["single_adapter"]), 3)
        out["mixed_over_single_per_repeat"] = [round(m / s, 3) for m, s in zip(tps["mixed_adapters"], tps["single_adapter"])]
        out["target_mixed_over_single"] = 0.9
    if "single_adapter" in tps and "base" in tps:
        out["single_adapter_over_base"] = round(statistics.median(tps["single_adapter"]) / statistics.median(tps["base"]), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=192, help="episodes played each way (a round of a run)")
    ap.add_argument("--concurrency", type=int, default=64, help="episodes in flight at once in the concurrent play (and the engine's largest batch)")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3, help="times each measurement is taken (median, min, max reported)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument(
        "--adapter-models",
        nargs="*",
        choices=["tiny", "25m"],
        default=["tiny", "25m"],
        help="models of the mixed-adapter row: the tiny model, and a random ~28M-parameter Llama (8 layers, 512 wide)",
    )
    args = ap.parse_args()

    path = resolve_model_path(None, TinyModelConfig(), games=GAMES)
    engine = HFEngine(path, max_batch_size=args.concurrency)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0)
    agent = LLMAgent(engine, sampling=sampling)
    matchups, pools = matchups_and_pools(agent, args.episodes)

    # The first play, before this (the main) thread has run any parallel torch op: reported, not timed
    # with the rest. Here the engine thread's batches ran ~40x slower until the main thread had run
    # one (two OpenMP thread teams on two cores); one main-thread generate ends it.
    cold_eps, cold_s = play_timed(matchups, pools, args.concurrency)
    engine.generate_batch([cold_eps[0].turns[0].prompt_ids], sampling, [0])
    # warm-up outside the timings: oneDNN builds kernels per tensor shape on first use, so play the
    # whole concurrent set once more (its batches' shapes) and a few episodes one at a time
    play_timed(matchups, pools, args.concurrency)
    play_timed(matchups[: len(SEATINGS)], pools, 1)

    conc_s, seq_s, raw_s, tokens = [], [], [], []
    identical, same_batches, same_episodes = True, True, True
    first: list[Batch] | None = None
    conc_eps: list[Episode] = []
    recorder = BatchRecorder(engine)
    for r in range(args.repeats):
        conc_eps, dt = play_timed(matchups, pools, args.concurrency)
        batches = recorder.take()
        conc_s.append(dt)
        tokens.append(sum(b.tokens for b in batches))
        first = first or batches
        same_batches = same_batches and [(b.prompts, b.seeds) for b in batches] == [(b.prompts, b.seeds) for b in first]
        dt_raw, raw_tokens, same = replay(engine, batches)
        raw_s.append(dt_raw)
        identical = identical and same and raw_tokens == tokens[-1]
        seq_eps, dt = play_timed(matchups, pools, 1)
        recorder.take()
        seq_s.append(dt)
        same_episodes = same_episodes and [e.returns for e in conc_eps] == [e.returns for e in seq_eps]
        log(f"repeat {r + 1}/{args.repeats}: concurrent {conc_s[-1]:.2f} s, raw replay {dt_raw:.2f} s, sequential {dt:.2f} s, {tokens[-1]} tokens")
    recorder.close()

    assert first is not None
    rollout_tps = [t / s for t, s in zip(tokens, conc_s)]
    raw_tps = [t / s for t, s in zip(tokens, raw_s)]
    llm_turns = sum(len(b.prompts) for b in first)
    largest = max(first, key=lambda b: len(b.prompts))
    prompts = [t.prompt_ids for ep in conc_eps for t in ep.turns if t.policy_id == "main"]
    out = {
        "benchmark": "rollout_throughput",
        "episodes": args.episodes,
        "concurrency": args.concurrency,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "llm_turns": llm_turns,
        "batches": len(first),
        "mean_batch_size_concurrent": round(llm_turns / len(first), 1),
        "completion_tokens": tokens[0],
        "seconds_first_concurrent_play_cold": round(cold_s, 3),
        "seconds_concurrent": spread(conc_s),
        "seconds_sequential": spread(seq_s),
        "seconds_raw_generate": spread(raw_s),
        "episodes_per_s_concurrent": round(args.episodes / statistics.median(conc_s), 3),
        "episodes_per_s_sequential": round(args.episodes / statistics.median(seq_s), 3),
        "speedup_concurrent_vs_sequential": round(statistics.median(seq_s) / statistics.median(conc_s), 2),
        "speedup_per_repeat": [round(s / c, 2) for s, c in zip(seq_s, conc_s)],
        "rollout_tokens_per_s": spread(rollout_tps, 1),
        "raw_generate_tokens_per_s": spread(raw_tps, 1),
        "fraction_of_raw_generate": round(statistics.median(rollout_tps) / statistics.median(raw_tps), 3),
        "fraction_per_repeat": [round(a / b, 3) for a, b in zip(rollout_tps, raw_tps)],
        "replay_identical": identical,
        "same_batches_every_repeat": same_batches,
        "same_episodes_both_ways": same_episodes,
        "mean_prompt_tokens": round(statistics.mean(len(p) for p in prompts), 1),
        "model_parameters": sum(p.numel() for p in engine.model.parameters()),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    # the mixed-adapter row per model: on the tiny model a LoRA layer's per-adapter overhead is large
    # against its matmuls; on a bigger model the matmuls dominate
    for name in args.adapter_models:
        log(f"mixed adapters on the {name} model: {MIXED_ADAPTERS} adapters, batch of {len(largest.prompts)}")
        with tempfile.TemporaryDirectory(prefix="arena-throughput-") as tmp:
            model = path if name == "tiny" else random_llama(Path(path), Path(tmp) / name, hidden=512, intermediate=1536, layers=8, heads=8)
            row = adapter_batches(model, largest.prompts, args.max_new_tokens, args.repeats)
            row["model_parameters"] = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model).parameters())
        out["adapters" if name == "tiny" else f"adapters_{name}"] = row
    text = json.dumps(out, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
