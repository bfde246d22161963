"""What several trained policies cost in memory: full copies against LoRA adapters on one base.

For each model (the tiny model, and a ~100M-parameter random model of the same family, Llama) and
each way of holding a policy (``model.adapter`` full or lora), builds the run's model policies as
``arena run`` does (``load_model_policies``: engines, learners, KL references) for 1, 2, 4 and 8
trained policies, gives every policy one learning step (so the optimizer's state exists) and one
weight sync, and measures, each in a new process:

- ``peak_rss_mb``: the process's peak resident memory (engine and learners included);
- ``trainable_params``: per policy;
- ``sync_bytes_per_round``: the bytes every policy's sync sends, all policies together.

``lora8_over_full1``: peak memory of 8 LoRA policies over that of 1 full policy (target: at most 1.3),
per model. A configuration whose full copies would not fit in memory is skipped and says so.

    python benchmarks/policies_memory.py [--policies 1 2 4 8] [--models tiny 100m]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: full copies per policy in memory: engine, learner, KL reference, and Adam's two moments
FULL_COPIES = 5


def build_100m(tiny_dir: Path, out: Path) -> Path:
    """A random Llama of about 100M parameters with the tiny model's tokenizer (no download)."""
    return random_llama(tiny_dir, out, hidden=768, intermediate=2560, layers=12, heads=12)


def random_llama(tiny_dir: Path, out: Path, *, hidden: int, intermediate: int, layers: int, heads: int) -> Path:
    """A random Llama of the given shape with the tiny model's tokenizer, saved to ``out`` (no download)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def measure(model_dir: str, adapter: str, policies: int) -> dict:
    """In this process: the policies of a run, one learning step and one sync each; what it cost."""
    import torch
    from rich.console import Console

    from arena.config import RunConfig
    from arena.runtime import LocalRuntime, load_model_policies
    from arena.trainers.batching import Sample

    ids = [f"main/p{i}" for i in range(policies)]
    cfg = RunConfig.model_validate(
        {
            "name": "memory",
            "games": [{"id": "negotiation-v0", "matchups": [{"seller": pid, "buyer": "scripted/fair_buyer"} for pid in ids]}],
            "model": {"path": model_dir, "warm_start": None, "adapter": adapter},
            "trainer": {"recipe": "pg", "rounds": 1, "batch_size": 4},
        }
    )
    runtime = LocalRuntime.for_run(cfg)
    models = load_model_policies(cfg, Console(quiet=True), runtime)
    tok = models.tokenizer
    prompt = tok.encode("The seller asks $40. Your offer?", add_special_tokens=False)
    sample = Sample(prompt, tok.encode("OFFER $17", add_special_tokens=False), [-1.0] * len(tok.encode("OFFER $17", add_special_tokens=False)), 1.0)
    sync_bytes = 0
    trainable = 0
    for pid, learner in models.learners.items():
        learner.learn([sample] * 4, torch.Generator().manual_seed(0))
        weights = learner.engine_weights()
        sync_bytes += sum(v.numel() * v.element_size() for v in weights.values())
        trainable = sum(p.numel() for p in learner.trainable)
        runtime.sync(pid, models.agents[pid].engine, learner)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "adapter": adapter,
        "policies": policies,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "trainable_params": trainable,
        "sync_bytes_per_round": sync_bytes,
    }


def one(model_dir: str, adapter: str, policies: int) -> dict:
    code = (
        f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); from policies_memory import measure; "
        f"print(json.dumps(measure({model_dir!r}, {adapter!r}, {policies})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if out.returncode != 0:
        return {"adapter": adapter, "policies": policies, "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", nargs="*", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--models", nargs="*", default=["tiny", "100m"], choices=["tiny", "100m"])
    parser.add_argument("--memory-gb", type=float, default=20.0, help="skip configurations whose full copies would need more")
    args = parser.parse_args()

    from arena.models import resolve_model_path
    from arena.tiny import TinyModelConfig

    tiny = Path(resolve_model_path(None, TinyModelConfig(), games=["negotiation-v0"]))
    out: dict = {"machine": platform.platform(), "cpus": os.cpu_count(), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"tiny": tiny}
        if "100m" in args.models:
            paths["100m"] = build_100m(tiny, Path(tmp) / "random-100m")
        for name in args.models:
            from transformers import AutoConfig, AutoModelForCausalLM

            n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(paths[name])).parameters())
            rows = []
            for adapter in ("full", "lora"):
                for n in args.policies:
                    need_gb = n * FULL_COPIES * n_params * 4 / 2**30 if adapter == "full" else 0
                    if need_gb > args.memory_gb:
                        rows.append({"adapter": adapter, "policies": n, "skipped": f"{n} full policies need about {need_gb:.0f} GB"})
                        continue
                    rows.append(one(str(paths[name]), adapter, n))
                    print(json.dumps({"model": name, **rows[-1]}), file=sys.stderr, flush=True)
            peak = {(r["adapter"], r["policies"]): r.get("peak_rss_mb") for r in rows}
            ratio = peak.get(("lora", 8), None), peak.get(("full", 1), None)
            out["models"][name] = {
                "parameters": n_params,
                "rows": rows,
                "lora8_over_full1": round(ratio[0] / ratio[1], 3) if all(ratio) else None,
            }
    out["lora8_over_full1"] = {name: m["lora8_over_full1"] for name, m in out["models"].items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
