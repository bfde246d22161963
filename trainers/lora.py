"""A trained policy as a LoRA adapter: :class:`AdapterLearner` steps one adapter of a peft model
that may hold other policies' adapters on the same frozen base (:mod:`arena.adapters`).

Nothing is copied per policy: the KL reference is the base itself (the adapter disabled), the
optimizer holds the adapter's tensors alone, and what a sync sends is :func:`arena.adapters.adapter_state`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from arena.adapters import adapter_names, adapter_state, load_adapter_state
from arena.trainers.batching import forward_logprobs
from arena.trainers.selfplay import Learner


def adapter_parameters(model: Any, name: str) -> list[torch.nn.Parameter]:
    """The tensors of adapter ``name`` in a peft model (its LoRA A and B matrices)."""
    if name not in adapter_names(model):
        raise KeyError(f"no adapter {name!r}; the model has {adapter_names(model) or 'none'}")
    params = [p for n, p in model.named_parameters() if ".lora_" in n and f".{name}." in n]
    if not params:
        raise ValueError(f"adapter {name!r} has no LoRA tensors (target_modules matched nothing?)")
    return params


class AdapterLearner(Learner):
    """One policy's LoRA adapter, trained like :class:`~arena.trainers.selfplay.Learner` trains a whole model."""

    def __init__(self, model: Any, name: str, cfg: Any, pad_id: int, max_len: int = 2048, replay: Sequence[Any] = ()) -> None:
        self.model, self.name, self.cfg, self.pad_id, self.max_len = model, name, cfg, pad_id, max_len
        self.replay = list(replay)
        self.version = 0
        self.trainable = adapter_parameters(model, name)
        for p in self.trainable:
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.reference = None  # the base model, with the adapter disabled

    def learn(self, samples: list, generator: torch.Generator) -> dict[str, float]:
        self.model.set_adapter(self.name)
        for p in self.trainable:  # set_adapter may freeze what another learner's call thawed
            p.requires_grad_(True)
        return super().learn(samples, generator)

    def reference_logprobs(self, batch) -> torch.Tensor | None:
        if self.cfg.kl_coef <= 0:
            return None
        with torch.no_grad(), self.model.disable_adapter():
            return forward_logprobs(self.model, batch)[0]

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """The adapter's tensors: what its engines load."""
        return adapter_state(self.model, self.name)

    def engine_weights(self) -> dict[str, torch.Tensor]:
        return self.weights

    def probe_logprobs(self, probe) -> list[float]:
        from arena.weight_sync import probe_logprobs

        self.model.set_adapter(self.name)
        return probe_logprobs(self.model, probe)

    def save(self, directory: Path) -> None:
        """The adapter in peft's format (``adapter_config.json``, ``adapter_model.safetensors``) and the optimizer."""
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.weights, str(directory / "adapter_model.safetensors"))
        self.model.peft_config[self.name].save_pretrained(str(directory))
        torch.save(self.optimizer.state_dict(), directory / "optimizer.pt")

    def load(self, directory: Path) -> None:
        """Load what :meth:`save` wrote."""
        load_adapter_state(self.model, self.name, load_file(str(directory / "adapter_model.safetensors")))
        self.optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True))
