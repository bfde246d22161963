"""Weight sync, learner -> engines: versioned, bounded in time, checked on a probe.

After every update the learner's weights go to each engine that serves the
policy, tagged with the learner's version. Through Ray they travel once through
the object store (one ``ray.put``, or the reference a Ray Train worker put
there) and every engine actor loads them from it; each engine must confirm the
new version within ``timeout_s``.

Then the check: each engine scores a fixed probe sequence (:class:`Probe`,
a chat prompt and a reply rendered with the policy's tokenizer), and its
log-probabilities must match the learner's own on the same tokens within
``tolerance``. A sync that fails raises :class:`WeightSyncError` naming the
version, the engine and the largest difference. A sync that passed guarantees
that the next rollout samples from the weights the learner just produced,
whichever engine serves it, whatever the engine kind (HF or vLLM) or the
transport did to the tensors on the way.

The learner's side of the probe is :func:`probe_logprobs`: one forward of a
``transformers`` causal LM, the same arithmetic as the engines' ``score``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: what the probe says: any fixed text works, and none of a game's own is needed (a byte-level tokenizer
#: encodes every text); digits, capitals and punctuation exercise the common token kinds
PROBE_PROMPT = "Turn 3 of 10. The other player said: I propose 55. Your move?"
PROBE_REPLY = "I answer 48."

#: default largest |engine - learner| log-probability on the probe: float32 engines agree to ~1e-6;
#: a bfloat16 engine checked against a float32 learner needs a looser bound (~5e-2)
DEFAULT_TOLERANCE = 1e-3


class WeightSyncError(RuntimeError):
    """A weight sync that did not leave every engine serving the learner's weights."""

    def __init__(self, message: str, *, version: int, engine: str, max_diff: float | None = None) -> None:
        super().__init__(message)
        self.version = version
        self.engine = engine
        self.max_diff = max_diff


class WeightSyncTimeout(WeightSyncError):
    """An engine did not confirm the new version in time."""


class EngineDied(WeightSyncError):
    """An engine actor died during the sync (its owner restarts it and syncs it again)."""


@dataclass(frozen=True)
class Probe:
    """A fixed token sequence scored after each sync: ``continuation_ids`` after ``prompt_ids``."""

    prompt_ids: tuple[int, ...]
    continuation_ids: tuple[int, ...]
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not self.prompt_ids or not self.continuation_ids:
            raise ValueError("a probe needs a non-empty prompt and a non-empty continuation")


def make_probe(tokenizer: Any, prompt: str = PROBE_PROMPT, reply: str = PROBE_REPLY) -> Probe:
    """The probe for a policy's tokenizer: ``prompt`` as a user turn (chat template, when the
    tokenizer has one) and ``reply`` as the model's continuation."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer.encode(text, add_special_tokens=False)
    else:
        prompt_ids = tokenizer.encode(prompt)
    return Probe(tuple(int(i) for i in prompt_ids), tuple(int(i) for i in tokenizer.encode(reply, add_special_tokens=False)))


def probe_logprobs(model: Any, probe: Probe) -> list[float]:
    """The learner's log-probabilities of the probe's continuation (a ``transformers`` causal LM,
    bare or wrapped in DDP): ``[len(continuation_ids)]`` floats at ``probe.temperature``."""
    import torch

    bare = getattr(model, "module", model)
    device = next(bare.parameters()).device
    ids = torch.tensor([list(probe.prompt_ids) + list(probe.continuation_ids)], dtype=torch.long, device=device)
    n = len(probe.continuation_ids)
    was_training = bare.training
    bare.eval()
    try:
        with torch.inference_mode():
            logits = bare(input_ids=ids, use_cache=False).logits[0, -n - 1 : -1].float()
    finally:
        bare.train(was_training)
    temp = 1.0 if probe.temperature == 0 else probe.temperature
    logp = torch.log_softmax(logits / temp, dim=-1)
    return logp.gather(-1, ids[0, -n:, None]).squeeze(-1).tolist()


def probe_difference(engine_logprobs: Sequence[float], learner_logprobs: Sequence[float]) -> float:
    """Largest absolute difference between two probe scorings (inf when their lengths differ)."""
    if len(engine_logprobs) != len(learner_logprobs):
        return float("inf")
    return max((abs(float(a) - float(b)) for a, b in zip(engine_logprobs, learner_logprobs)), default=0.0)


def check_probe(engine: str, version: int, engine_logprobs: Sequence[float], learner_logprobs: Sequence[float], tolerance: float) -> float:
    """The largest difference, or :class:`WeightSyncError` naming version, engine and difference when above ``tolerance``."""
    diff = probe_difference(engine_logprobs, learner_logprobs)
    if not diff <= tolerance:  # also catches NaN
        raise WeightSyncError(
            f"weight sync to version {version}: engine {engine} does not serve the learner's weights: "
            f"its logprobs on the probe differ from the learner's by up to {diff:.3g} (tolerance {tolerance:g})",
            version=version,
            engine=engine,
            max_diff=diff,
        )
    return diff


@dataclass
class SyncReport:
    """One completed sync: the version every engine now serves and how closely each matched the learner."""

    version: int
    seconds: float
    #: engine name -> largest |engine - reference| logprob on the probe
    max_diff: dict[str, float] = field(default_factory=dict)
    #: what the engines were checked against: the learner's probe logprobs (or the first engine's)
    reference: list[float] = field(default_factory=list)

    def metrics(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}/version": float(self.version),
            f"{prefix}/seconds": self.seconds,
            f"{prefix}/max_probe_diff": max(self.max_diff.values(), default=0.0),
        }


# ----- an engine in this process ------------------------------------------------------------------
def sync_local(
    engines: Mapping[str, Any],
    state_dict: Mapping[str, Any],
    version: int,
    probe: Probe,
    learner_logprobs: Sequence[float],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> SyncReport:
    """Load ``state_dict`` into in-process engines (:class:`~arena.engines.base.Engine`) and check each on the probe."""
    started = time.perf_counter()
    report = SyncReport(version=int(version), seconds=0.0, reference=list(learner_logprobs))
    for name, engine in engines.items():
        engine.update_weights(state_dict, int(version))
        if engine.version != int(version):
            raise WeightSyncError(f"weight sync to version {version}: engine {name} reports version {engine.version}", version=version, engine=name)
        scored = engine.score(list(probe.prompt_ids), list(probe.continuation_ids), probe.temperature)
        report.max_diff[name] = check_probe(name, int(version), scored, learner_logprobs, tolerance)
    report.seconds = time.perf_counter() - started
    return report


# ----- engine actors through the object store -----------------------------------------------------
def sync_actors(
    actors: Mapping[str, Any],
    weights: Any,
    version: int,
    probe: Probe,
    learner_logprobs: Sequence[float] | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    timeout_s: float = 120.0,
) -> SyncReport:
    """Push ``weights`` (a state dict, or an ``ObjectRef`` to one) to engine actors and check each on the probe.

    ``actors`` maps engine names to actor handles with the
    :class:`~arena.engines.actor.EngineActor` methods ``update_weights(weights, version) -> version``
    and ``score(prompt_ids, continuation_ids, temperature)``. The weights are put in
    the object store once; every actor reads them from there. With
    ``learner_logprobs=None`` (weights that no learner scored, e.g. a past
    snapshot) the engines are checked against the first one. Raises
    :class:`WeightSyncTimeout` when an engine has not confirmed within ``timeout_s``
    (loading and scoring together), :class:`WeightSyncError` on a wrong version or a
    probe mismatch, and :class:`EngineDied` for an engine that died.
    """
    import ray

    started = time.perf_counter()
    deadline = started + timeout_s
    ref = weights if isinstance(weights, ray.ObjectRef) else ray.put(dict(weights))
    loads = {name: actor.update_weights.remote(ref, int(version)) for name, actor in actors.items()}
    got = _gather(loads, deadline, version, "load the weights", timeout_s)
    for name, v in got.items():
        if int(v) != int(version):
            raise WeightSyncError(f"weight sync to version {version}: engine {name} reports version {v}", version=version, engine=name)
    scores = {name: actor.score.remote(list(probe.prompt_ids), list(probe.continuation_ids), probe.temperature) for name, actor in actors.items()}
    scored = _gather(scores, deadline, version, "score the probe", timeout_s)
    reference = list(learner_logprobs) if learner_logprobs is not None else list(scored[next(iter(actors))])
    report = SyncReport(version=int(version), seconds=0.0, reference=reference)
    for name in actors:
        report.max_diff[name] = check_probe(name, int(version), scored[name], reference, tolerance)
    report.seconds = time.perf_counter() - started
    return report


def _gather(refs: Mapping[str, Any], deadline: float, version: int, what: str, timeout_s: float) -> dict[str, Any]:
    """Results by engine name; a timeout or a dead engine is reported under its name."""
    import ray

    by_ref = {ref: name for name, ref in refs.items()}
    _, pending = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=max(0.0, deadline - time.perf_counter()))
    if pending:
        late = sorted(by_ref[r] for r in pending)
        raise WeightSyncTimeout(
            f"weight sync to version {version}: engine {', '.join(late)} did not {what} within {timeout_s:g} s",
            version=version,
            engine=late[0],
        )
    out = {}
    for name, ref in refs.items():
        try:
            out[name] = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            raise EngineDied(f"weight sync to version {version}: engine {name} died", version=version, engine=name) from e
    return out
