"""benchmarks/gpu_check.py runs end to end on a CPU with the tiny model (as CI runs it) and prints one
JSON object with every section's figures: vLLM generation, the rollout's fraction of it, full-weight
and adapter sync with the probe check, and two training rounds of four LoRA policies."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAVE_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.long
def test_gpu_check_runs_on_cpu_and_reports_every_section(tiny_model_dir, tmp_path):
    # the session's model cache (the tiny model of both shipped games is already built there)
    env = {**os.environ, "ARENA_HOME": str(tiny_model_dir.parent.parent), "TOKENIZERS_PARALLELISM": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out_file = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--size", "tiny", "--repeats", "2", "--out", str(out_file)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)  # stdout is the JSON object alone (vLLM's logs go to stderr)
    assert json.loads(out_file.read_text()) == out

    assert out["device"] == "cpu" and out["size"] == "tiny" and out["dtype"] == "float32"
    assert out["model"]["parameters"] > 0 and out["model"]["family"] == "llama"
    for section in ("vllm_generate", "rollout", "weight_sync", "training"):
        assert out[section]["seconds"] >= 0, section
    assert out["total_s"] < out["budget_s"]

    if HAVE_VLLM:
        gen, roll, sync = out["vllm_generate"], out["rollout"], out["weight_sync"]
        assert "error" not in gen and gen["tokens_per_s"]["median"] > 0 and len(gen["tokens_per_s"]["values"]) == 2
        assert "error" not in roll and roll["rollout_tokens_per_s"]["median"] > 0
        assert 0 < roll["fraction_of_raw"] < 1.5
        assert roll["replay_identical"], "the raw replay of the rollout's batches gives the rollout's tokens"
        full = sync["full"]
        assert full["seconds"]["median"] > 0 and full["max_probe_diff"] <= full["probe_tolerance"] and full["version"] == 2
        assert full["probe_change_between_syncs"] > full["probe_tolerance"], "each sync changes what the probe sees"
    else:  # sections that need vLLM say why they could not run
        assert "vllm" in out["vllm_generate"]["error"] and "vllm" in out["weight_sync"]["full"]["error"].lower()
    adapter = out["weight_sync"]["adapter"]
    assert adapter["seconds"]["median"] > 0 and adapter["max_probe_diff"] <= adapter["probe_tolerance"] and adapter["version"] == 2
    assert adapter["engine"] == "vllm" or "vllm_error" in adapter  # a fallback to HF says why

    train = out["training"]
    assert "error" not in train, train
    assert train["policies"] == 4 and train["rounds"] == 2 and len(train["round_s"]) == 2 and all(s > 0 for s in train["round_s"])
    assert train["versions"] == {pid: 2 for pid in ("main/seller_a", "main/seller_b", "main/buyer_a", "main/buyer_b")}
