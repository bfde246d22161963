"""GPU check: what only a GPU can show, measured by one prepared script in at most 8 minutes.

On CUDA it builds a random model of about 0.5B parameters locally (Qwen2's architecture, the tiny
model's tokenizer, random weights: nothing comes from the hub) in bfloat16; without CUDA it uses the
tiny model in float32, so the whole script runs on a CPU in well under a minute (CI, and the test
``tests/test_gpu_check.py``). ``--size`` forces either. Then it measures, each section timed:

a. ``vllm_generate``: vLLM's raw batched generation (:class:`arena.engines.vllm.VLLMEngine`): one batch
   of game prompts (GPU: 256 rows, up to 128 new tokens each; CPU: 16 x 16), tokens per second
   (``--repeats`` times, vLLM's prefix cache emptied before each); the engine's start-up and warm-up.
b. ``rollout``: Arena's rollout through that engine (an :class:`LLMAgent` against scripted bots in
   both shipped games, ``play_many``), tokens per second, as a fraction of the same engine's raw
   ``generate_batch`` on exactly the batches the rollout formed (same prompts, batch sizes, sampling
   and seeds, so the same tokens: see ``benchmarks/rollout_throughput.py``).
c. ``weight_sync``: a full-weight sync into the vLLM engine (:func:`arena.weight_sync.sync_local`:
   load, then the probe's log-probabilities checked against the learner's), and an adapter sync
   (one LoRA adapter's tensors only) into a LoRA-enabled vLLM engine (eager: no second compilation).
   Where vLLM cannot serve adapters (a :class:`VLLMEngine` without ``enable_lora``, a build whose
   LoRA fails) that error is recorded and the adapter sync is measured on the HF engine instead,
   labelled ``engine: hf (fallback ...)``. On the LoRA engine,
   ``mixed_batch``: one batch through 8 adapters at once against one adapter and the base model
   (every row decodes the same number of tokens; as ``rollout_throughput.py`` does on HF).
d. ``training``: two training rounds of :func:`arena.experiment.run` with four model policies, each
   a LoRA adapter of the one model, served by the HF engine (negotiation: two sellers and two
   buyers, each against a bot): seconds per round (rollout, learn, sync) and every policy's version
   after them (2 expected).

Each section is wrapped: one that fails records ``{"error": ...}`` and the others still run. A
budget guard (``--budget-s``, 480 by default) stops a section that would eat the time the later
ones need, and skips sections once the time is spent, saying so. Prints one JSON object on stdout
(progress on stderr); ``--out PATH`` also writes it, after every section, so a session cut short
keeps what it measured.

    python benchmarks/gpu_check.py [--size auto|tiny|0.5b] [--budget-s 480] [--repeats 3] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the budget counts from here: importing torch, transformers and Arena is part of the 8 minutes
STARTED = time.perf_counter()

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rollout_throughput import GAMES, MIXED_ADAPTERS, BatchRecorder, compare_routes, matchups_and_pools, play_timed, replay, spread  # noqa: E402

#: a random model of about 0.5B parameters: Qwen2's architecture (grouped-query attention, biased
#: q/k/v projections, tied embeddings); wider than Qwen2-0.5B's 896 because the tiny tokenizer's
#: vocabulary is ~1k tokens instead of 152k, so the layers hold what its embedding would have held
QWEN2_05B = {
    "hidden_size": 1024,
    "intermediate_size": 5632,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
}

#: the bf16 engine is checked against a bf16 learner: kernels differ, ~1e-2 is ordinary (weight_sync.py)
BF16_TOLERANCE = 5e-2

#: per size: the work each section does (CPU: seconds in all; GPU: enough to load an H100)
SETTINGS = {
    "tiny": {"batch": 16, "max_new_tokens": 16, "episodes": 16, "concurrency": 8, "rollout_tokens": 8, "train_group": 2, "train_tokens": 8, "eval_episodes": 1},
    "0.5b": {
        "batch": 256,
        "max_new_tokens": 128,
        "episodes": 256,
        "concurrency": 128,
        "rollout_tokens": 32,
        "train_group": 4,
        "train_tokens": 24,
        "eval_episodes": 2,
    },
}

#: seconds each section needs at least on a GPU: an earlier section may not eat into them (vLLM's
#: start-up with compilation and CUDA graphs is the big one)
RESERVE_S = {"vllm_generate": 120, "rollout": 45, "weight_sync": 60, "training": 90}


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Check:
    """What the sections share: settings, the model, the vLLM engine once started."""

    args: argparse.Namespace
    size: str
    device: str
    dtype: str
    tmp: Path
    model_path: Path | None = None
    tokenizer: Any = None
    vllm: Any = None
    prompts: list[list[int]] = field(default_factory=list)
    #: section a's median tokens/s (None until it ran)
    generate_tps: float | None = None

    @property
    def s(self) -> dict[str, Any]:
        return SETTINGS[self.size]

    @property
    def tolerance(self) -> float:
        from arena.weight_sync import DEFAULT_TOLERANCE

        return BF16_TOLERANCE if self.dtype == "bfloat16" else DEFAULT_TOLERANCE


# ----- the model -------------------------------------------------------------------------------
def tiny_model_path() -> Path:
    from arena.models import resolve_model_path
    from arena.tiny import TinyModelConfig

    return Path(resolve_model_path(None, TinyModelConfig(), games=GAMES))


def build_model(c: Check) -> dict[str, Any]:
    """The model the sections use: the tiny model, or a random ~0.5B Qwen2 with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tiny = tiny_model_path()
    if c.size == "tiny":
        c.model_path = tiny
        c.tokenizer = AutoTokenizer.from_pretrained(tiny)
        model = AutoModelForCausalLM.from_pretrained(tiny)
        n = sum(p.numel() for p in model.parameters())
        return {"family": model.config.model_type, "parameters": n, "dtype": c.dtype, "path": str(tiny)}
    tok = AutoTokenizer.from_pretrained(tiny)
    config = Qwen2Config(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **QWEN2_05B,
    )
    with torch.random.fork_rng(devices=[0] if c.device == "cuda" else []), torch.device(c.device):
        torch.manual_seed(0)  # the random weights, without touching the process's own generators
        model = Qwen2ForCausalLM(config).to(torch.bfloat16 if c.dtype == "bfloat16" else torch.float32)
    n = sum(p.numel() for p in model.parameters())
    out = c.tmp / "qwen2-random-0.5b"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    _free()
    c.model_path, c.tokenizer = out, tok
    return {"family": "qwen2", "parameters": n, "dtype": c.dtype, "path": str(out), "vocab_size": len(tok), **QWEN2_05B}


def vllm_options(c: Check) -> dict[str, Any]:
    opts: dict[str, Any] = {"dtype": c.dtype, "max_batch_size": max(c.s["batch"], c.s["concurrency"])}
    if c.device == "cuda":
        # leave room for a second (LoRA) engine and the training section's HF model and learners
        opts.update(kv_cache_gib=8.0, engine_options={"gpu_memory_utilization": 0.35}, enforce_eager=c.args.eager or None)
    return opts


# ----- a. vLLM raw batched generation ---------------------------------------------------------
def vllm_generate(c: Check, res: dict[str, Any]) -> None:
    from arena.agents.llm import LLMAgent
    from arena.engines.base import SamplingParams
    from arena.engines.vllm import VLLMEngine

    c.vllm = VLLMEngine(c.model_path, **vllm_options(c))
    res.update(engine=f"vllm on {c.vllm.platform}", startup_s=round(c.vllm.startup_s, 2), warmup_s=round(c.vllm.warmup_s, 2))
    log(f"vLLM up: start-up {c.vllm.startup_s:.1f} s, warm-up {c.vllm.warmup_s:.1f} s")
    # the game prompts the rollout will see: a few episodes through the engine (also its warm-up)
    agent = LLMAgent(c.vllm, sampling=SamplingParams(max_new_tokens=8))
    matchups, pools = matchups_and_pools(agent, 8)
    episodes, _ = play_timed(matchups, pools, 8)
    c.prompts = [t.prompt_ids for ep in episodes for t in ep.turns if t.policy_id == "main"]
    batch = [c.prompts[i % len(c.prompts)] for i in range(c.s["batch"])]
    params = SamplingParams(max_new_tokens=c.s["max_new_tokens"], temperature=1.0)
    c.vllm.generate_batch(batch, params, list(range(len(batch))))  # this batch shape's first run
    tps, tokens = [], []
    for r in range(c.args.repeats):
        _cold(c.vllm)
        t0 = time.perf_counter()
        outs = c.vllm.generate_batch(batch, params, [r * len(batch) + i for i in range(len(batch))])
        dt = time.perf_counter() - t0
        tokens.append(sum(len(o.token_ids) for o in outs))
        tps.append(tokens[-1] / dt)
        log(f"vLLM raw: {tokens[-1]} tokens in {dt:.2f} s")
    c.generate_tps = statistics.median(tps)
    res.update(
        batch_size=len(batch),
        max_new_tokens=params.max_new_tokens,
        mean_prompt_tokens=round(statistics.mean(map(len, batch)), 1),
        completion_tokens=tokens,
        tokens_per_s=spread(tps, 1),
    )


# ----- b. Arena's rollout through the engine --------------------------------------------------
def rollout(c: Check, res: dict[str, Any]) -> None:
    from arena.agents.llm import LLMAgent
    from arena.engines.base import SamplingParams

    if c.vllm is None:
        raise RuntimeError("no vLLM engine: section vllm_generate did not start one")
    sampling = SamplingParams(max_new_tokens=c.s["rollout_tokens"], temperature=1.0)
    agent = LLMAgent(c.vllm, sampling=sampling)
    matchups, pools = matchups_and_pools(agent, c.s["episodes"])
    res.update(episodes=len(matchups), concurrency=c.s["concurrency"], max_new_tokens=sampling.max_new_tokens)
    recorder = BatchRecorder(c.vllm)
    play_timed(matchups[: c.s["concurrency"]], pools, c.s["concurrency"])  # warm-up at the rollout's batch sizes
    recorder.take()
    rollout_tps: list[float] = []
    raw_tps: list[float] = []
    identical: list[bool] = []
    try:
        for r in range(c.args.repeats):
            _cold(c.vllm)
            _, dt = play_timed(matchups, pools, c.s["concurrency"])
            batches = recorder.take()
            tokens = sum(b.tokens for b in batches)
            _cold(c.vllm)
            dt_raw, raw_tokens, same = replay(c.vllm, batches)
            rollout_tps.append(tokens / dt)
            raw_tps.append(raw_tokens / dt_raw)
            identical.append(same)
            llm_turns = sum(len(b.prompts) for b in batches)
            log(f"rollout {r + 1}: {tokens} tokens in {dt:.2f} s; raw replay {raw_tokens} in {dt_raw:.2f} s")
            res.update(  # after every repeat: a section stopped early keeps what it measured
                llm_turns=llm_turns,
                batches=len(batches),
                mean_batch_size=round(llm_turns / max(len(batches), 1), 1),
                rollout_tokens_per_s=spread(rollout_tps, 1),
                raw_tokens_per_s_same_batches=spread(raw_tps, 1),
                fraction_of_raw=round(statistics.median(rollout_tps) / statistics.median(raw_tps), 3),
                fraction_per_repeat=[round(a / b, 3) for a, b in zip(rollout_tps, raw_tps)],
                # vLLM samples each row from its own seed: the replay gives the rollout's very tokens
                replay_identical=all(identical),
            )
            if c.generate_tps:  # against section a's one big batch: batch size and lengths differ
                res["fraction_of_vllm_generate"] = round(statistics.median(rollout_tps) / c.generate_tps, 3)
    finally:
        recorder.close()


# ----- c. weight sync -------------------------------------------------------------------------
def weight_sync(c: Check, res: dict[str, Any]) -> None:
    full = res["full"] = {}
    try:
        if c.vllm is None:
            raise RuntimeError("no vLLM engine: section vllm_generate did not start one")
        full_sync(c, c.vllm, "vllm", full)
    except Exception as e:
        full.update(_error(e))
    adapter = res["adapter"] = {}
    try:
        adapter_sync_vllm(c, adapter)
    except Exception as e:
        log(f"adapter sync on vLLM failed ({type(e).__name__}: {e}); measuring it on the HF engine instead")
        adapter.clear()
        adapter["vllm_error"] = _error(e)["error"]
        try:
            adapter_sync(c, _hf_engine(c), "hf (fallback: vLLM adapter sync failed)", adapter)
        except Exception as e2:
            adapter.update(_error(e2))


def _learner_model(c: Check) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(c.model_path, dtype=_torch_dtype(c.dtype)).to(c.device)


def full_sync(c: Check, engine: Any, name: str, res: dict[str, Any]) -> None:
    """Sync two weight sets alternately (the model, and the model nudged), so every sync changes
    what the engine serves and the probe check has something to catch."""
    from arena.weight_sync import make_probe, probe_difference, probe_logprobs, sync_local

    probe = make_probe(engine.tokenizer)
    model = _learner_model(c)
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    lp_original = probe_logprobs(model, probe)
    g = torch.Generator(device=c.device).manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():  # parameters(), not the state dict: a tied weight is nudged once
            scale = max(0.25 * float(p.float().std()) if p.numel() > 1 else 0.0, 1e-3)  # a quarter of the tensor's spread
            p.add_(torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype) * scale)
    nudged = {k: v.detach().clone() for k, v in model.state_dict().items()}
    lp_nudged = probe_logprobs(model, probe)
    del model
    states = [(nudged, lp_nudged), (original, lp_original)]
    seconds, diffs = [], []
    for r in range(c.args.repeats):
        state, lp = states[r % 2]
        report = sync_local({name: engine}, state, engine.version + 1, probe, lp, tolerance=c.tolerance)
        seconds.append(report.seconds)
        diffs.append(report.max_diff[name])
        log(f"full sync {r + 1}: {report.seconds:.3f} s, probe diff {report.max_diff[name]:.2e}")
    res.update(
        engine=name,
        bytes=sum({v.data_ptr(): v.numel() * v.element_size() for v in original.values()}.values()),  # a tied weight once
        seconds=spread(seconds, 4),
        version=engine.version,
        max_probe_diff=max(diffs),
        probe_tolerance=c.tolerance,
        # how far the two weight sets are apart on the probe: a sync that did nothing would fail the check
        probe_change_between_syncs=round(probe_difference(lp_original, lp_nudged), 5),
    )


def adapter_sync_vllm(c: Check, res: dict[str, Any]) -> None:
    """The adapter sync into a LoRA-enabled vLLM engine, with HFEngine's adapter API."""
    from arena.engines.vllm import VLLMEngine

    params = inspect.signature(VLLMEngine.__init__).parameters
    if "enable_lora" not in params or not hasattr(VLLMEngine, "add_adapters"):
        raise NotImplementedError("VLLMEngine serves no LoRA adapters yet (no enable_lora argument / add_adapters method)")
    if c.vllm is not None:  # one vLLM engine at a time: give the first one's memory back
        _close_vllm(c.vllm)
        c.vllm = None
    # eager: no second compilation and CUDA-graph capture (a minute of a short GPU session); the sync
    # does not depend on them, the mixed batch's figures are eager ones and say so
    engine = VLLMEngine(c.model_path, enable_lora=True, max_loras=MIXED_ADAPTERS, **{**vllm_options(c), "enforce_eager": True})
    try:
        adapter_sync(c, engine, "vllm", res)
        try:
            res["mixed_batch"] = vllm_mixed_adapters(c, engine)
        except Exception as e:
            res["mixed_batch"] = _error(e)
    finally:
        _close_vllm(engine)


def vllm_mixed_adapters(c: Check, engine: Any) -> dict[str, Any]:
    """One batch through 8 random adapters at once against one adapter and the base model (as
    rollout_throughput.py does on the HF engine)."""
    from arena.adapters import LoraSpec

    names = [f"mix_{i}" for i in range(MIXED_ADAPTERS)]
    engine.add_adapters(LoraSpec(), names, random_init=True)
    batch = [c.prompts[i % len(c.prompts)] for i in range(c.s["batch"])]
    routes = {
        "mixed_adapters": (engine, [names[i % len(names)] for i in range(len(batch))]),
        "single_adapter": (engine, [names[0]] * len(batch)),
        "base": (engine, None),
    }
    return {"enforce_eager": True, **compare_routes(routes, batch, c.s["rollout_tokens"], c.args.repeats, before=lambda: _cold(engine))}


def adapter_sync(c: Check, engine: Any, label: str, res: dict[str, Any]) -> None:
    """One adapter's tensors synced alternately from two random states, each checked on the probe."""
    from arena.adapters import AdapterView, LoraSpec, adapter_state, add_adapters, load_adapter_state
    from arena.weight_sync import make_probe, probe_logprobs, sync_local

    spec, name = LoraSpec(), "main/p0"
    probe = make_probe(engine.tokenizer)
    learner = add_adapters(_learner_model(c), spec, [name, "main/p1"], random_init=True)
    # two random adapters' tensors (keys carry no adapter name), each loaded into `name` in turn
    learner.set_adapter(name)
    first, second = adapter_state(learner, name), adapter_state(learner, "main/p1")
    states = [(first, probe_logprobs(learner, probe))]
    load_adapter_state(learner, name, second)
    states.append((second, probe_logprobs(learner, probe)))
    del learner
    engine.add_adapters(spec, [name])
    view = AdapterView(engine, name)
    seconds, diffs = [], []
    for r in range(c.args.repeats):
        state, lp = states[r % 2]
        report = sync_local({name: view}, state, view.version + 1, probe, lp, tolerance=c.tolerance)
        seconds.append(report.seconds)
        diffs.append(report.max_diff[name])
        log(f"adapter sync ({label}) {r + 1}: {report.seconds:.4f} s, probe diff {report.max_diff[name]:.2e}")
    res.update(
        engine=label,
        lora_rank=spec.rank,
        bytes=sum(v.numel() * v.element_size() for v in states[0][0].values()),
        seconds=spread(seconds, 4),
        version=view.version,
        max_probe_diff=max(diffs),
        probe_tolerance=c.tolerance,
    )


def _hf_engine(c: Check) -> Any:
    from arena.engines.hf import HFEngine

    return HFEngine(c.model_path, device=c.device, dtype=c.dtype)


# ----- d. two training rounds, four LoRA policies ---------------------------------------------
POLICIES = ("main/seller_a", "main/seller_b", "main/buyer_a", "main/buyer_b")


def training(c: Check, res: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient
    from rich.console import Console

    from arena.config import RunConfig
    from arena.experiment import run

    if c.vllm is not None:  # the run serves its policies on an HF engine: give vLLM's memory back
        _close_vllm(c.vllm)
        c.vllm = None
    uri = f"sqlite:///{c.tmp / 'mlflow.db'}"
    cfg = RunConfig.model_validate(
        {
            "name": "gpu_check",
            "seed": 0,
            "episodes_per_matchup": c.s["eval_episodes"],
            "games": [
                {
                    "id": "negotiation-v0",
                    # each policy against a bot: a random model forfeits often, and a model buyer facing a
                    # model seller that forfeits first would never move (nor learn, nor reach version 2)
                    "matchups": [
                        {"seller": "main/seller_a", "buyer": "scripted/fair_buyer"},
                        {"seller": "main/seller_b", "buyer": "scripted/fair_buyer"},
                        {"seller": "scripted/fair_seller", "buyer": "main/buyer_a"},
                        {"seller": "scripted/fair_seller", "buyer": "main/buyer_b"},
                    ],
                }
            ],
            "model": {"path": str(c.model_path), "warm_start": None, "adapter": "lora", "device": c.device, "dtype": c.dtype},
            "sampling": {"max_new_tokens": c.s["train_tokens"]},
            "trainer": {"recipe": "pg", "rounds": 2, "group_size": c.s["train_group"], "groups_per_matchup": 2},
            "cluster": {"probe_tolerance": c.tolerance},
            "tracking": {"uri": uri, "traces_per_round": 0, "trace_extremes": False, "trace_illegal": False},
            "runs_dir": str(c.tmp / "runs"),
        }
    )
    result = run(cfg, Console(file=sys.stderr, quiet=not c.args.verbose))
    client = MlflowClient(uri)
    metrics = client.get_run(result.run_id).data.metrics

    def history(key: str) -> list[float]:
        return [round(m.value, 3) for m in sorted(client.get_metric_history(result.run_id, key), key=lambda m: m.step)]

    res.update(
        {
            "policies": len(POLICIES),
            "adapter": "lora",
            "rounds": result.rounds_done,
            "round_s": history("time/round_s"),
            "rollout_s": history("time/rollout_s"),
            "learn_s": history("time/learn_s"),
            "sync_s": history("time/sync_s"),
            "rollout_tokens_per_s": history("train/rollout_tokens_per_s"),
            "run_s": round(result.seconds, 2),
            "versions": {pid: int(metrics[f"sync/{pid}/version"]) for pid in POLICIES},
            "max_probe_diff": max(metrics[f"sync/{pid}/max_probe_diff"] for pid in POLICIES),
            "episodes_per_round": len(POLICIES) * 2 * c.s["train_group"],
        }
    )


# ----- running the sections -------------------------------------------------------------------
SECTIONS: list[tuple[str, Callable[[Check, dict[str, Any]], None]]] = [
    ("vllm_generate", vllm_generate),
    ("rollout", rollout),
    ("weight_sync", weight_sync),
    ("training", training),
]


class OutOfTime(BaseException):
    """A section ran into the time the later ones need (a BaseException: no section's own
    ``except Exception`` may swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`OutOfTime` in this (the main) thread after ``seconds``."""

    def stop(signum: int, frame: Any) -> None:
        raise OutOfTime(f"stopped after {seconds:.0f} s: the budget's time for this section (the rest kept for the later ones) ran out")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1.0))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["auto", "tiny", "0.5b"], default="auto", help="auto: 0.5b with CUDA, tiny without")
    ap.add_argument("--budget-s", type=float, default=480.0, help="the whole check's time; sections that would run past it are skipped")
    ap.add_argument("--repeats", type=int, default=3, help="times each throughput and sync is measured (median, min, max reported)")
    ap.add_argument("--eager", action="store_true", help="vLLM without CUDA graphs and compilation (faster start, slower decode)")
    ap.add_argument("--only", nargs="*", choices=[name for name, _ in SECTIONS], help="run only these sections")
    ap.add_argument("--verbose", action="store_true", help="the training run's own console output (on stderr)")
    ap.add_argument("--out", type=Path, help="also write the JSON here (after every section)")
    args = ap.parse_args()
    # stdout carries the JSON alone: vLLM logs to stdout, and its engine process inherits the
    # descriptor, so point descriptor 1 at stderr and keep a private copy of stdout for the result
    sys.stdout.flush()
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    started = STARTED
    cuda = torch.cuda.is_available()
    size = args.size if args.size != "auto" else ("0.5b" if cuda else "tiny")
    device = "cuda" if cuda else "cpu"
    dtype = "bfloat16" if cuda else "float32"
    out: dict[str, Any] = {
        "benchmark": "gpu_check",
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "size": size,
        "dtype": dtype,
        "budget_s": args.budget_s,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(ImportError):
        import vllm

        out["vllm"] = vllm.__version__

    def write() -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="arena-gpu-check-") as tmp:
        c = Check(args=args, size=size, device=device, dtype=dtype, tmp=Path(tmp))
        t0 = time.perf_counter()
        try:
            out["model"] = {**build_model(c), "seconds": round(time.perf_counter() - t0, 2)}
        except Exception as e:
            out["model"] = {**_error(e), "seconds": round(time.perf_counter() - t0, 2)}
        write()
        log(f"model: {out['model']}")
        todo = [(n, fn) for n, fn in SECTIONS if not args.only or n in args.only]
        for i, (name, fn) in enumerate(todo):
            left = args.budget_s - (time.perf_counter() - started)
            # on a CPU the sizes are tiny: the budget only stops a section that hangs
            need = RESERVE_S[name] if cuda else 5.0
            later = sum(RESERVE_S[n] for n, _ in todo[i + 1 :]) if cuda else 0.0
            if c.model_path is None:
                out[name] = {"skipped": "no model: see model.error"}
                continue
            if left < need:
                out[name] = {"skipped": f"out of time: {left:.0f} s of the {args.budget_s:.0f} s budget left, {need:.0f} s needed"}
                continue
            log(f"section {name} ({left:.0f} s left)")
            t0 = time.perf_counter()
            res = out[name] = {}  # filled as the section goes: a failure keeps what was measured
            try:
                with time_limit(min(left, max(left - later, need))):
                    fn(c, res)
            except (Exception, OutOfTime) as e:
                res.update(_error(e))
                log(f"section {name} failed: {res['error']}")
            res["seconds"] = round(time.perf_counter() - t0, 2)
            write()
        if c.vllm is not None:
            _close_vllm(c.vllm)
    out["total_s"] = round(time.perf_counter() - started, 2)
    write()
    result.write(json.dumps(out, indent=2) + "\n")
    result.flush()


# ----- helpers --------------------------------------------------------------------------------
def _error(e: BaseException) -> dict[str, Any]:
    where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    return {"error": f"{type(e).__name__}: {e}"[:2000], **({"at": f"{Path(where.filename).name}:{where.lineno}"} if where else {})}


def _cold(engine: Any) -> None:
    """Empty vLLM's prefix cache: a measurement that replays prompts seen before would otherwise
    skip their prefill, and the two sides of a comparison would not do the same work."""
    engine.llm.reset_prefix_cache()


def _torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _close_vllm(engine: Any) -> None:
    """Shut a vLLM engine down and give its memory back (its engine-core process too, on a GPU)."""
    for close in (getattr(engine, "close", None), getattr(engine, "shutdown", None)):
        if callable(close):
            with contextlib.suppress(Exception):
                close()
            break
    else:
        with contextlib.suppress(Exception):
            engine.llm.llm_engine.engine_core.shutdown()
    with contextlib.suppress(Exception):
        del engine.llm
    _free()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
