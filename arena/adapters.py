"""LoRA adapters: several policies on one frozen base model, served together (``peft``).

Each trained policy, snapshot or per-role copy can be a LoRA adapter on one base model instead of a
full copy. An engine that holds the base once serves every adapter in the same batched forward pass:
each row of a batch names its adapter (or the base), and :func:`routed` adds each row's own LoRA
term in one pass per layer.

    spec = LoraSpec(rank=8, alpha=16)
    engine.add_adapters(spec, ["main/seller", "main/buyer"])
    seller = AdapterView(engine, "main/seller")     # an Engine: what an LLMAgent plays through
    seller.update_weights(adapter_state(learner_model, "main/seller"), version=3)

Why peft: it injects LoRA into any transformers causal LM by module name, keeps several named
adapters on one model, trains and saves them in the format other tools load. Arena adds the engine's
bookkeeping (which adapter a request is for, its version) and the mixed-batch forward: peft's own
(``adapter_names=``) loops over the batch's adapters in every layer and rebuilds the row lists in
Python at every step, which cost a quarter of the throughput of a one-adapter batch on a CPU.
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


@contextlib.contextmanager
def routed(model: Any, rows: Sequence[str | None]) -> Iterator[dict[str, Any]]:
    """Inside, every forward of peft model ``model`` serves row ``i`` of its batch with adapter
    ``rows[i]`` (None: the base model); yields the keywords the forward needs (none, or peft's
    ``adapter_names`` where a layer is not a plain LoRA linear).

    Each LoRA layer adds ``((x @ A) * mask) @ B`` to its base output, where ``A`` and ``B`` stack the
    batch's adapters side by side (scale folded into ``B``) and ``mask`` keeps each row's own block:
    two matmuls per layer for any number of adapters, no per-adapter loop, no gather. A base row's
    mask is all zero, so it gets the base output exactly.
    """
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    names = sorted({r for r in rows if r is not None})
    unknown = [n for n in names if n not in adapter_names(model)]
    if unknown:
        raise KeyError(f"no adapter {unknown[0]!r}; the model has {adapter_names(model) or 'none'}")
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    plain = all(type(m) is LoraLinear and not m.merged and not any(n in m.lora_variant for n in names) for m in layers)
    if not plain:  # DoRA, embeddings, merged weights: peft's own mixed batch
        yield {"adapter_names": [BASE if r is None else r for r in rows]}
        return
    if not names:
        with model.disable_adapter():
            yield {}
        return
    pick = None  # [rows, names * rank]: 1 on each row's own adapter's block
    if any(r != names[0] for r in rows):
        pick = torch.zeros(len(rows), len(names))
        for i, r in enumerate(rows):
            if r is not None:
                pick[i, names.index(r)] = 1.0
    hooks = []
    try:
        for m in layers:
            hooks.append(m.register_forward_hook(_RowLora(m, names, pick)))
        with model.disable_adapter():  # the layers give their base output; the hooks add the LoRA term
            yield {}
    finally:
        for h in hooks:
            h.remove()


class _RowLora:
    """One LoRA linear's per-row term for a batch (:func:`routed`)."""

    def __init__(self, layer: Any, names: list[str], pick: torch.Tensor | None) -> None:
        a0 = next(iter(layer.lora_A.values())).weight
        a_blocks, b_blocks, ranks = [], [], []
        for n in names:
            if n in layer.lora_A:
                a_blocks.append(layer.lora_A[n].weight)
                b_blocks.append(layer.lora_B[n].weight * layer.scaling[n])
            else:  # this adapter does not wrap this layer: a zero block
                a_blocks.append(a0.new_zeros((1, a0.shape[1])))
                b_blocks.append(a0.new_zeros((layer.out_features, 1)))
            ranks.append(a_blocks[-1].shape[0])
        self.a = torch.cat(a_blocks).T.contiguous()  # [in, sum of ranks]
        self.b = torch.cat(b_blocks, dim=1).T.contiguous()  # [sum of ranks, out]
        self.mask = None
        if pick is not None:
            self.mask = pick.repeat_interleave(torch.tensor(ranks), dim=1).to(device=self.a.device, dtype=self.a.dtype)

    def __call__(self, module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        x = args[0].to(self.a.dtype)
        h = x @ self.a
        if self.mask is not None:
            h = h * self.mask.view(self.mask.shape[0], *([1] * (x.dim() - 2)), self.mask.shape[1])
        return output + (h @ self.b).to(output.dtype)


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
