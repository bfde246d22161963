"""Checkpoints: everything a killed run needs to resume where it stopped.

A checkpoint is a directory ``<runs_dir>/<name>/checkpoints/round_NNNNN``
holding, per trained policy, its weights (``save_pretrained``) and optimizer
state, plus ``state.json``: the rounds done, each policy's weight version,
the role baselines, the snapshot pool, the before-training evaluation, the
MLflow run id and the resolved config. It is written to a temporary directory
and renamed into place, so a kill at any moment leaves either the previous
checkpoint or the new one, never half of one.

No random-generator state needs saving: every generator in a run is derived
from (run seed, round, ...) when it is needed, so round r plays and learns the
same way whether the process started at round 0 or resumed at round r.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

STATE = "state.json"


def run_dir(runs_dir: str | Path, name: str) -> Path:
    return Path(runs_dir) / name


def policy_dirname(policy_id: str) -> str:
    return policy_id.replace("/", "__")


def save(directory: Path, state: dict[str, Any], learners: dict[str, Any], tokenizer: Any) -> Path:
    """Write checkpoint ``directory`` atomically; ``learners`` maps policy id -> Learner."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        for pid, learner in learners.items():
            d = tmp / "policies" / policy_dirname(pid)
            if hasattr(learner, "save"):  # a LoRA adapter: peft's format, the adapter alone
                learner.save(d)
                tokenizer.save_pretrained(d)
                continue
            learner.model.save_pretrained(d)
            tokenizer.save_pretrained(d)
            torch.save(learner.optimizer.state_dict(), d / "optimizer.pt")
        (tmp / STATE).write_text(json.dumps(state, indent=1, sort_keys=True))
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def latest(runs_dir: str | Path, name: str) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    root = run_dir(runs_dir, name) / "checkpoints"
    done = sorted(p for p in root.glob("round_*") if (p / STATE).is_file()) if root.is_dir() else []
    return done[-1] if done else None


def read_state(directory: Path) -> dict[str, Any]:
    return json.loads((directory / STATE).read_text())


def load_policy(directory: Path, policy_id: str, learner: Any) -> None:
    """Load a policy's weights and optimizer state into an existing Learner."""
    from safetensors.torch import load_file

    d = directory / "policies" / policy_dirname(policy_id)
    if hasattr(learner, "load"):
        learner.load(d)
        return
    weights = load_file(str(d / "model.safetensors"))
    missing, unexpected = learner.model.load_state_dict(weights, strict=False)
    # Tied embeddings are saved once; anything else missing is a real mismatch.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"checkpoint {d} does not fit the model: missing {missing}, unexpected {unexpected}")
    if getattr(learner.model.config, "tie_word_embeddings", False):
        learner.model.tie_weights()
    learner.optimizer.load_state_dict(torch.load(d / "optimizer.pt", weights_only=True))
