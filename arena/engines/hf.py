"""Hugging Face transformers engine: a batched decode loop over a KV cache, CPU or GPU.

Why not ``model.generate``: Arena needs each row's sampling to depend only on
that row's seed (so an episode replays the same whatever else shared its
batch), and the logprob of every sampled token at the sampling temperature.
The loop here does one batched forward per step over left-padded prompts and
draws each row's randomness from its own ``torch.Generator``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from arena.engines.base import Completion, Engine, SamplingParams

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class HFEngine(Engine):
    """Serve a causal LM loaded with ``from_pretrained`` (local path or hub id)."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        max_batch_size: int = 64,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=_DTYPES[dtype])
        self._setup(model.to(device), tokenizer, max_batch_size)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, max_batch_size: int = 64) -> HFEngine:
        """Wrap an already-loaded model and tokenizer (the model stays on its device and dtype)."""
        engine = cls.__new__(cls)
        engine._setup(model, tokenizer, max_batch_size)
        return engine

    def _setup(self, model: Any, tokenizer: Any, max_batch_size: int) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.version = 0
        self.max_batch_size = max_batch_size
        self.device = next(model.parameters()).device
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_token_id = int(pad)
        self.eos_token_ids = self._default_stop_ids()
        #: LoRA adapter name -> the version of its weights (empty: the engine serves its model alone)
        self.adapter_versions: dict[str, int] = {}

    def _default_stop_ids(self) -> tuple[int, ...]:
        """The tokenizer's eos, its ``<|end|>`` token if it has one, and the model's generation eos."""
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        end = self.tokenizer.convert_tokens_to_ids("<|end|>")
        if isinstance(end, int) and end != self.tokenizer.unk_token_id:
            ids.add(end)
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            ids.update([gen_eos] if isinstance(gen_eos, int) else gen_eos)
        return tuple(sorted(ids))

    # ----- generation -----------------------------------------------------------------------
    def generate_batch(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int], adapters: list[str | None] | None = None) -> list[Completion]:
        """``adapters[i]`` names the LoRA adapter that serves row ``i`` (None: the base model); rows of
        different adapters share every forward pass (:meth:`add_adapters`)."""
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
        if adapters is not None:
            if len(adapters) != len(prompts):
                raise ValueError(f"got {len(prompts)} prompts but {len(adapters)} adapter names")
            unknown = sorted({a for a in adapters if a is not None} - set(self.adapter_versions))
            if unknown:
                raise KeyError(f"the engine serves no adapter {unknown[0]!r}; it has {sorted(self.adapter_versions) or 'none'}")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if params.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {params.temperature}")
        if not 0 < params.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {params.top_p}")
        if not prompts:
            return []
        n_new = params.max_new_tokens
        if n_new <= 0:
            return [Completion([], [], "", "length") for _ in prompts]
        with self._routing(adapters, len(prompts)) as routing:
            tokens, logprobs = self._decode(prompts, params, seeds, routing)
        stop_ids = set(self.eos_token_ids) | set(params.stop_token_ids)
        return [self._completion(t, lp, stop_ids) for t, lp in zip(tokens, logprobs)]

    def _routing(self, adapters: list[str | None] | None, rows: int) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """Inside, the forward sends each row to its adapter, or to the base model
        (:func:`arena.adapters.routed`); yields the forward's extra keywords."""
        from arena.adapters import routed

        if not self.adapter_versions:
            if adapters is not None and any(a is not None for a in adapters):
                raise KeyError("the engine serves no adapters (add_adapters first)")
            return contextlib.nullcontext({})
        return routed(self.model, adapters or [None] * rows)

    @torch.inference_mode()
    def _decode(
        self, prompts: list[list[int]], params: SamplingParams, seeds: list[int], routing: dict[str, Any] | None = None
    ) -> tuple[list[list[int]], list[list[float]]]:
        """Sample up to ``max_new_tokens`` per row; rows keep (ignored) tokens after they stop."""
        dev, B, n_new = self.device, len(prompts), params.max_new_tokens
        routing = routing or {}
        greedy = params.temperature == 0
        temp = 1.0 if greedy else params.temperature

        # Left-pad so that every row's next token sits in the last column.
        width = max(map(len, prompts))
        input_ids = torch.full((B, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((B, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        input_ids, mask = input_ids.to(dev), mask.to(dev)
        # Positions count real tokens only, so padding does not shift a row's rotary phases.
        position_ids = (mask.cumsum(-1) - 1).clamp_(min=0)

        # One uniform per row per step, each row from its own generator: a row's
        # draws depend on its seed alone, never on the batch around it.
        uniforms = None
        if not greedy:
            uniforms = torch.stack([torch.rand(n_new, generator=torch.Generator().manual_seed(_seed64(s)), dtype=torch.float64) for s in seeds]).to(dev)

        stop = torch.tensor(sorted(set(self.eos_token_ids) | set(params.stop_token_ids)), dtype=torch.long, device=dev)
        out_tokens = torch.full((B, n_new), self.pad_token_id, dtype=torch.long, device=dev)
        out_logprobs = torch.zeros((B, n_new), dtype=torch.float32, device=dev)
        done = torch.zeros(B, dtype=torch.bool, device=dev)

        cache = DynamicCache(config=self.model.config)
        logits = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **routing,
        ).logits[:, -1, :]
        next_pos = position_ids[:, -1:] + 1
        steps = 0
        for step in range(n_new):
            logp = torch.log_softmax(logits.float() / temp, dim=-1)
            if greedy:
                tok = logp.argmax(-1)
            else:
                tok = _sample(logp, params.top_p, uniforms[:, step])
            tok = torch.where(done, self.pad_token_id, tok)
            out_tokens[:, step] = tok
            out_logprobs[:, step] = logp.gather(-1, tok[:, None]).squeeze(-1)
            done |= torch.isin(tok, stop)
            steps = step + 1
            if steps == n_new or bool(done.all()):
                break
            mask = torch.cat([mask, mask.new_ones((B, 1))], dim=-1)
            logits = self.model(
                input_ids=tok[:, None],
                attention_mask=mask,
                position_ids=next_pos,
                past_key_values=cache,
                use_cache=True,
                **routing,
            ).logits[:, -1, :]
            next_pos = next_pos + 1
        return out_tokens[:, :steps].tolist(), out_logprobs[:, :steps].tolist()

    def _completion(self, tokens: list[int], logprobs: list[float], stop_ids: set[int]) -> Completion:
        for j, t in enumerate(tokens):
            if t in stop_ids:
                ids = tokens[: j + 1]
                text = self.tokenizer.decode(ids[:-1], skip_special_tokens=True)
                return Completion(ids, logprobs[: j + 1], text, "stop")
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Completion(tokens, logprobs, text, "length")

    # ----- weights and scoring ----------------------------------------------------------------
    def update_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> None:
        """Load new weights in place (strict: every key must match) and record their version."""
        if self.adapter_versions:
            raise RuntimeError("this engine serves LoRA adapters on a frozen base: update one with update_adapter(name, state, version)")
        with torch.no_grad():
            self.model.load_state_dict(state_dict, strict=True)
        self.version = int(version)

    def add_adapters(self, spec: Any, names: list[str], *, random_init: bool = False, seed: int = 0) -> None:
        """Serve LoRA adapters ``names`` (shape :class:`arena.adapters.LoraSpec`) on this engine's
        model, each at version 0; a new adapter is the base model until its weights are loaded."""
        from arena.adapters import add_adapters

        self.model = add_adapters(self.model, spec, names, random_init=random_init, seed=seed).eval()
        self.adapter_versions.update(dict.fromkeys(names, 0))

    def update_adapter(self, name: str, state: dict[str, torch.Tensor], version: int) -> None:
        """Load one adapter's tensors (:func:`arena.adapters.adapter_state`) and record their version."""
        from arena.adapters import load_adapter_state

        load_adapter_state(self.model, name, state)
        self.adapter_versions[name] = int(version)

    def adapter_state(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors adapter ``name`` is served with (:func:`arena.adapters.adapter_state`)."""
        from arena.adapters import adapter_state

        return adapter_state(self.model, name)

    def remove_adapter(self, name: str) -> None:
        """Stop serving adapter ``name`` and free its tensors (a snapshot dropped from a pool)."""
        if name not in self.adapter_versions:
            raise KeyError(f"the engine serves no adapter {name!r}")
        if len(self.adapter_versions) == 1:
            raise ValueError(f"{name!r} is the engine's last adapter; a LoRA engine keeps at least one")
        active = self.model.active_adapter
        if active == name:  # peft deletes only an inactive adapter cleanly
            self.model.set_adapter(next(n for n in self.adapter_versions if n != name))
        self.model.delete_adapter(name)
        del self.adapter_versions[name]

    @torch.inference_mode()
    def score(self, prompt_ids: list[int], continuation_ids: list[int], temperature: float = 1.0, adapter: str | None = None) -> list[float]:
        """Log-probabilities of ``continuation_ids`` after ``prompt_ids`` under the current weights
        (of ``adapter``, on a multi-adapter engine; None: the base model).

        ``temperature`` scales the logits as sampling did (0 is treated as 1, as for greedy).
        """
        if not prompt_ids:
            raise ValueError("score needs a non-empty prompt")
        if not continuation_ids:
            return []
        temp = 1.0 if temperature == 0 else temperature
        ids = torch.tensor([list(prompt_ids) + list(continuation_ids)], dtype=torch.long, device=self.device)
        n = len(continuation_ids)
        with self._routing([adapter], 1) as routing:
            logits = self.model(input_ids=ids, use_cache=False, logits_to_keep=n + 1, **routing).logits[0, :-1].float()
        logp = torch.log_softmax(logits / temp, dim=-1)
        target = ids[0, -n:]
        return logp.gather(-1, target[:, None]).squeeze(-1).tolist()


def _sample(logp: torch.Tensor, top_p: float, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling, one uniform per row, optionally from the top-p nucleus.

    logp: [B, V] log-probabilities; u: [B] uniforms in [0, 1). Returns [B] token ids.
    Each row uses only its own logits and uniform, so rows are independent of each other.
    """
    probs = logp.exp()
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True, stable=True)
        # keep a token if the mass before it is below top_p: the top token always stays
        before = probs.cumsum(-1) - probs
        probs = probs.masked_fill(before >= top_p, 0.0)
    else:
        order = None
    cdf = probs.double().cumsum(-1)
    target = (u * cdf[:, -1]).unsqueeze(-1)
    idx = torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[-1] - 1)
    if order is not None:
        idx = order.gather(-1, idx)
    return idx.squeeze(-1)


def _seed64(seed: int) -> int:
    """Any Python int as a valid ``torch.Generator`` seed (negative and huge seeds included)."""
    return int(seed) & 0xFFFF_FFFF_FFFF_FFFF
