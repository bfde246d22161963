"""Distributed runtime figures: rollouts in one process vs on Ray, vLLM vs HF generation, weight-sync time.

Prints one JSON object:

* ``rollout_tokens_per_s``: the model's completion tokens per second of wall
  time, playing the same episodes (the warm-started tiny model against scripted
  bots in both shipped games) with the single-process runtime (torch's default
  threads, and one thread) and with the Ray runtime (2 rollout workers; 1 or 2
  HF engine actors, one torch thread each, as Ray sets for a fractional CPU),
  through ``runtime.play`` as a run's round does; the best of ``--repeats``
  timed rounds (on a shared machine other jobs only ever slow a round down);
* ``vllm_vs_hf_generate_ratio``: vLLM's tokens per second over HF's for one
  ``generate_batch`` of 32 rollout prompts, greedy (so both produce the same
  tokens: equal batch and lengths; the untrained tiny model, which rarely
  stops early), both on one torch thread (vLLM's CPU worker drops to one);
  null, with ``vllm_reason``, where the vLLM engine cannot be built here;
* ``weight_sync_s``: seconds per learner -> engines sync (a state dict through
  the object store to 2 HF engine actors, each confirming the version and
  scoring the probe, checked against the learner's own probe scoring), median
  and best of ``--sync-repeats``, for tiny Llamas of ~1M, ~5M and ~20M parameters.

    python benchmarks/distributed.py [--episodes 96] [--parts rollout sync vllm]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from rich.console import Console

from arena.config import RunConfig
from arena.distributed import RayRuntime
from arena.engines.actor import EngineActor, init_ray
from arena.engines.base import SamplingParams
from arena.engines.hf import HFEngine
from arena.models import resolve_model_path
from arena.records import Matchup
from arena.runtime import LocalRuntime, load_model_policies, policy_pools
from arena.tiny import TinyModelConfig, build_tiny_model
from arena.trainers.imitation import ImitationConfig
from arena.weight_sync import make_probe, probe_logprobs, sync_actors

QUIET = Console(quiet=True)
#: the games whose text and bots make the tiny model (as configs/selfplay.yaml)
GAMES = ("negotiation-v0", "repeated_matrix-v0")
SEATINGS = [
    ("negotiation-v0", {"seller": "main", "buyer": "scripted/fair_buyer"}),
    ("negotiation-v0", {"seller": "scripted/fair_seller", "buyer": "main"}),
    ("repeated_matrix-v0", {"player_0": "main", "player_1": "scripted/tit_for_tat"}),
]
#: (hidden size, layers, heads) of the tiny Llamas timed for weight sync; MLP width 4x hidden
SYNC_MODELS = {"1M": (128, 4, 4), "5M": (256, 5, 8), "20M": (512, 5, 8)}


def run_config(model_path: str, mode: str, engines: int, concurrency: int) -> RunConfig:
    games: dict[str, list] = {}
    for game, seats in SEATINGS:
        games.setdefault(game, []).append(seats)
    return RunConfig.model_validate(
        {
            "games": [{"id": g, "matchups": m} for g, m in games.items()],
            "model": {"path": model_path},
            "rollout": {"concurrency": concurrency},
            "trainer": {"recipe": "none"},
            "cluster": {"mode": mode, "rollout_workers": 2, "engines": engines},
        }
    )


def rollout_tokens_per_s(cfg: RunConfig, runtime: Any, episodes: int, repeats: int) -> tuple[float, list]:
    """Model completion tokens per second of the best of ``repeats`` timed ``runtime.play`` calls (after a warm-up)."""
    models = load_model_policies(cfg, QUIET, runtime)
    pools = policy_pools(cfg, models)
    matchups = [Matchup(game=SEATINGS[i % len(SEATINGS)][0], seed=i, seats=SEATINGS[i % len(SEATINGS)][1]) for i in range(episodes)]
    ids = [f"ep-{i:05d}" for i in range(episodes)]
    runtime.play(matchups[:8], pools, ids[:8], QUIET, "warm-up")
    best, played = 0.0, []
    for _ in range(repeats):
        started = time.perf_counter()
        played = runtime.play(matchups, pools, ids, QUIET, "timed")
        seconds = time.perf_counter() - started
        best = max(best, sum(len(t.completion_ids) for ep in played for t in ep.turns if t.policy_id == "main") / seconds)
    return best, played


def vllm_vs_hf(model_path: str, prompts: list[list[int]], max_new_tokens: int, repeats: int = 5) -> dict[str, Any]:
    """tokens/s of one greedy generate_batch, vLLM over HF, same prompts and batch."""
    try:
        from arena.engines.vllm import VLLMEngine, import_vllm

        import_vllm()
    except ImportError as e:
        return {"vllm_vs_hf_generate_ratio": None, "vllm_reason": str(e)}
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    seeds = list(range(len(prompts)))

    def tokens_per_s(engine) -> tuple[float, list]:
        engine.generate_batch(prompts, params, seeds)  # warm-up
        best, out = 0.0, []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = engine.generate_batch(prompts, params, seeds)
            best = max(best, sum(len(c.token_ids) for c in out) / (time.perf_counter() - t0))
        return best, out

    hf_tps, hf_out = tokens_per_s(HFEngine(model_path, max_batch_size=len(prompts)))
    try:
        vllm_engine = VLLMEngine(model_path, max_batch_size=len(prompts))
    except Exception as e:  # vLLM imports but cannot start here
        return {"vllm_vs_hf_generate_ratio": None, "vllm_reason": f"{type(e).__name__}: {e}"}
    vllm_tps, vllm_out = tokens_per_s(vllm_engine)
    return {
        "vllm_vs_hf_generate_ratio": round(vllm_tps / hf_tps, 3),
        "vllm_generate_tokens_per_s": round(vllm_tps, 1),
        "hf_generate_tokens_per_s": round(hf_tps, 1),
        "vllm_generate": {
            "batch": len(prompts),
            "max_new_tokens": max_new_tokens,
            "same_tokens_as_hf": [c.token_ids for c in vllm_out] == [c.token_ids for c in hf_out],
            "mean_completion_tokens": round(sum(len(c.token_ids) for c in hf_out) / len(hf_out), 1),
            "startup_s": round(vllm_engine.startup_s, 1),
            "warmup_s": round(vllm_engine.warmup_s, 1),
        },
    }


def weight_sync_seconds(root: Path, repeats: int) -> dict[str, Any]:
    """Median seconds per sync of a perturbed learner model to 2 engine actors, probe check included."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = [f"Round {i % 10 + 1} of 10. You offered {10 + i % 80}; the buyer offered {5 + i % 70}. offer, accept or reject?" for i in range(400)]
    out: dict[str, Any] = {}
    for label, (hidden, layers, heads) in SYNC_MODELS.items():
        path = build_tiny_model(TinyModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=4 * hidden), corpus, root / label)
        learner = AutoModelForCausalLM.from_pretrained(path)
        probe = make_probe(AutoTokenizer.from_pretrained(path))
        actors = {f"engine_{i}": EngineActor.options(num_cpus=0.5).remote("hf", str(path), {}) for i in range(2)}
        ray.get([a.version.remote() for a in actors.values()])
        generator = torch.Generator().manual_seed(0)
        times, diffs = [], []
        for version in range(1, repeats + 1):
            with torch.no_grad():  # a learner's update: every weight moves
                for p in learner.parameters():
                    p.add_(torch.randn(p.shape, generator=generator) * 1e-3)
            t0 = time.perf_counter()
            expected = probe_logprobs(learner, probe)
            report = sync_actors(actors, {k: v.detach() for k, v in learner.state_dict().items()}, version, probe, expected)
            times.append(time.perf_counter() - t0)
            diffs.append(max(report.max_diff.values()))
        for a in actors.values():
            ray.kill(a)
        out[label] = {
            "parameters": sum(p.numel() for p in learner.parameters()),
            "seconds": round(statistics.median(times), 4),
            "best_s": round(min(times), 4),
            "max_probe_diff": max(diffs),
        }
    return out


PARTS = ("rollout", "sync", "vllm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="*", choices=PARTS, default=list(PARTS), help="what to measure")
    ap.add_argument("--episodes", type=int, default=96, help="episodes per timed rollout")
    ap.add_argument("--concurrency", type=int, default=64, help="episodes in flight (split between the Ray rollout workers)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per rollout setting (the best is kept)")
    ap.add_argument("--sync-repeats", type=int, default=7)
    ap.add_argument("--vllm-batch", type=int, default=32)
    args = ap.parse_args()

    warm = resolve_model_path(None, TinyModelConfig(), warm_start=ImitationConfig(), games=GAMES)
    threads = torch.get_num_threads()
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ray": ray.__version__,
            "torch_threads": threads,
        }
    }
    played: list = []
    if "rollout" in args.parts:
        tps: dict[str, float] = {}
        local = run_config(warm, "local", 1, args.concurrency)
        tps["single_process"], played = rollout_tokens_per_s(local, LocalRuntime.for_run(local), args.episodes, args.repeats)
        torch.set_num_threads(1)  # on a shared machine, several threads that wait on each other can stall
        tps["single_process_1_thread"], _ = rollout_tokens_per_s(local, LocalRuntime.for_run(local), args.episodes, args.repeats)
        torch.set_num_threads(threads)
        init_ray(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        for engines in (1, 2):
            cfg = run_config(warm, "ray", engines, max(1, args.concurrency // 2))
            with RayRuntime(cfg) as runtime:
                tps[f"ray_{engines}_engine{'s' if engines > 1 else ''}"], _ = rollout_tokens_per_s(cfg, runtime, args.episodes, args.repeats)
        result["rollout_tokens_per_s"] = {k: round(v, 1) for k, v in tps.items()}
        result["rollout_setup"] = {
            "episodes": args.episodes,
            "rollout_workers": 2,
            "in_flight": args.concurrency,
            "single_process_threads": threads,
            "engine_actor_threads": 1,
        }

    if "sync" in args.parts:
        torch.set_num_threads(1)  # the learner's side, as in a Ray Train worker
        if not ray.is_initialized():
            init_ray(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        with tempfile.TemporaryDirectory(prefix="arena-sync-bench-") as tmp:
            result["weight_sync_s"] = weight_sync_seconds(Path(tmp), args.sync_repeats)
    if ray.is_initialized():
        ray.shutdown()

    if "vllm" in args.parts:
        torch.set_num_threads(1)
        if not played:
            local = run_config(warm, "local", 1, args.concurrency)
            _, played = rollout_tokens_per_s(local, LocalRuntime.for_run(local), args.vllm_batch, 1)
        prompts = [t.prompt_ids for ep in played for t in ep.turns if t.policy_id == "main"][: args.vllm_batch]
        # the untrained tiny model (same shape and tokenizer) rarely ends a reply early: equal, full lengths
        result.update(vllm_vs_hf(resolve_model_path(None, TinyModelConfig(), games=GAMES), prompts, max_new_tokens=32))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
