"""LoRA adapters: several policies on one frozen base model, served together (``peft``).

Each trained policy, snapshot or per-role copy can be a LoRA adapter on one base model instead of a
full copy. An engine that holds the base once serves every adapter in the same batched forward pass:
each row of a batch names its adapter (or the base), which is what peft's mixed-adapter batches do
(``adapter_names=`` on the forward).

    spec = LoraSpec(rank=8, alpha=16)
    engine.add_adapters(spec, ["main/seller", "main/buyer"])
    seller = AdapterView(engine, "main/seller")     # an Engine: what an LLMAgent plays through
    seller.update_weights(adapter_state(learner_model, "main/seller"), version=3)

Why peft: it injects LoRA into any transformers causal LM by module name, keeps several named
adapters on one model, saves them in the format other tools load, and routes a mixed batch row by
row; Arena adds only the engine's bookkeeping (which adapter a request is for, its version).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from arena.engines.base import Completion, Engine, SamplingParams

#: the name peft gives the base model (no adapter) in a mixed batch
BASE = "__base__"


class LoraSpec(BaseModel):
    """A LoRA adapter's shape: rank, scale, which modules it wraps, and dropout while training."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    #: module names (suffixes) to wrap, or "all-linear" (every linear layer but the output head)
    target_modules: list[str] | str = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    dropout: float = Field(0.0, ge=0, lt=1)


def lora_config(spec: LoraSpec, *, random_init: bool = False) -> Any:
    """peft's ``LoraConfig`` for ``spec``. ``random_init``: B is random too, so a new adapter already
    changes the model (tests); by default B is zero and a new adapter is the base model exactly."""
    from peft import LoraConfig

    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        target_modules=spec.target_modules,
        lora_dropout=spec.dropout,
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=False if random_init else True,
    )


def add_adapters(model: Any, spec: LoraSpec, names: Sequence[str], *, random_init: bool = False, seed: int = 0) -> Any:
    """Attach one LoRA adapter per name to ``model`` (a transformers model, or a peft model that has
    some already); returns the peft model. The base weights are frozen; each adapter's are trainable.

    An adapter's initial tensors are a function of ``(seed, name)`` alone, drawn from a generator of
    their own (the global ones are left as they were): two runs of one config, or a learner and an
    engine, start every adapter from the same tensors."""
    from peft import PeftModel, get_peft_model

    names = list(names)
    if not names:
        raise ValueError("add_adapters needs at least one adapter name")
    if BASE in names:
        raise ValueError(f"{BASE!r} names the base model; choose another adapter name")
    config = lora_config(spec, random_init=random_init)
    for name in names:
        if isinstance(model, PeftModel) and name in model.peft_config:
            raise ValueError(f"adapter {name!r} exists already")
        with _seeded(seed, name):
            if isinstance(model, PeftModel):
                model.add_adapter(name, config)
            else:
                model = get_peft_model(model, config, adapter_name=name)
    return model


@contextlib.contextmanager
def _seeded(seed: int, name: str) -> Iterator[None]:
    """Torch's generators seeded from ``(seed, name)`` inside, restored after."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
        yield


def adapter_names(model: Any) -> list[str]:
    """The adapters a peft model holds (none for a plain model)."""
    return list(getattr(model, "peft_config", {}) or {})


def adapter_state(model: Any, name: str) -> dict[str, torch.Tensor]:
    """One adapter's tensors (peft's key names, without the adapter's name): what a sync sends."""
    from peft import get_peft_model_state_dict

    _known(model, name)
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}


def load_adapter_state(model: Any, name: str, state: dict[str, torch.Tensor]) -> None:
    """Load tensors from :func:`adapter_state` into adapter ``name``; every key must match."""
    from peft import set_peft_model_state_dict

    _known(model, name)
    expected = set(adapter_state(model, name))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"adapter {name!r}: the state does not match (missing {missing[:3]}, unexpected {extra[:3]})")
    with torch.no_grad():
        set_peft_model_state_dict(model, state, adapter_name=name)


def _known(model: Any, name: str) -> None:
    if name not in adapter_names(model):
        raise KeyError(f"no adapter {name!r}; the model has {adapter_names(model) or 'none'}")


class AdapterView(Engine):
    """One adapter of a multi-adapter engine, as an :class:`Engine` of its own: its requests carry
    the adapter's name and join the engine's batches with every other adapter's; its version is the
    adapter's; ``update_weights`` loads adapter tensors only."""

    def __init__(self, engine: Any, name: str) -> None:
        if name not in engine.adapter_versions:
            raise KeyError(f"the engine serves no adapter {name!r}; it has {sorted(engine.adapter_versions) or 'none'}")
        self.engine, self.name = engine, name
        self.tokenizer = engine.tokenizer
        self.max_batch_size = engine.max_batch_size

    @property
    def version(self) -> int:  # type: ignore[override]
        return self.engine.adapter_versions[self.name]

    async def generate(self, prompt_ids: list[int], params: SamplingParams, seed: int) -> Completion:
        return await self.engine.generate(prompt_ids, params, seed, adapter=self.name)

    def generate_batch(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[Completion]:
        return self.engine.generate_batch(prompts, params, seeds, adapters=[self.name] * len(prompts))

    def score(self, prompt_ids: list[int], continuation_ids: list[int], temperature: float = 1.0) -> list[float]:
        return self.engine.score(prompt_ids, continuation_ids, temperature, adapter=self.name)

    def update_weights(self, state: dict[str, torch.Tensor], version: int) -> None:
        self.engine.update_adapter(self.name, state, version)

    def close(self) -> None:
        """Stop serving this adapter (its engine frees the tensors); the view is unusable afterwards."""
        self.engine.remove_adapter(self.name)

    @property
    def stats(self):  # the engine's: one batcher, one set of totals
        return self.engine.stats

    def __repr__(self) -> str:
        return f"<AdapterView {self.name}@{self.version} of {type(self.engine).__name__}>"
