"""Listening and speaking signals read from a model's scores (Sarkar et al., 2025), for any game
whose players talk about a hidden target.

Sarkar et al. (social deduction: the crew must find a hidden impostor) split
communication into listening (predicting the hidden answer from the
discussion) and speaking (saying what moves the others toward the right
answer), and read both from the listeners' own policies:

- **Listening target**: a listener's belief over the candidates, from its
  model: for each candidate ``c`` the log-probability of an answer such as
  ``The impostor is red.`` after a prompt built from that listener's
  observation plus a question, normalised over the candidates (a softmax of
  the summed answer-token logprobs). The prompt is rendered exactly as the
  seated :class:`~arena.agents.llm.LLMAgent` renders a move prompt (its chat
  template and system prompt), so the belief is that policy's.
- **Speaking reward** of a message: the mean, over the other listeners, of the
  change in probability on the true answer from just before the message to
  just after it; negated when the speaker is on the deceiving side (e.g. an
  impostor wants the crew's belief to move away from the truth).

Games stay free of tokenizers: a game exposes its discussions as text
(:class:`Discussion`: what each listener saw before and after each message,
the answers per candidate, the truth), and this module scores them with the
seated agents' engines (``engine.score(prompt_ids, continuation_ids)``, as in
:class:`~arena.engines.hf.HFEngine`). Listeners seated with a policy that has
no model (a scripted bot) have no belief and are left out.

An Arena :class:`~arena.game.TextGame` gets this by returning its discussions
from ``discussions()`` and running with ``belief_scoring`` on: its
``after_play`` scores them and the signals flow into the episode's reward
components, returns and metrics (see :mod:`arena.game`). Directly::

    scores = score_discussions("social_deduction-v0", game.discussions(), seated)
    scores.listening["crew_1"], scores.speaking["impostor"], scores.metrics()
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arena.agents.base import PlayerView


@dataclass(frozen=True)
class Utterance:
    """One message of a discussion: who said it, who listened, and the snapshots around it."""

    speaker: str
    #: the listeners whose belief change counts (the speaker's teammates or targets, never the speaker)
    listeners: tuple[str, ...]
    #: index into :attr:`Discussion.snapshots` just before and just after the message
    before: int
    after: int
    #: True when the speaker gains by moving belief away from the truth
    negate: bool = False


@dataclass(frozen=True)
class Discussion:
    """One discussion as text: everything needed to read beliefs before and after each message."""

    #: appended to a listener's observation to ask for its belief
    question: str
    #: the true candidate
    truth: str
    #: listener -> candidate -> answer text (e.g. "The impostor is red.")
    answers: Mapping[str, Mapping[str, str]]
    #: listener -> its observation text, at the start and after every message
    snapshots: Sequence[Mapping[str, str]]
    utterances: Sequence[Utterance] = ()


# ----- pure maths --------------------------------------------------------------------------------
def normalise(logps: Mapping[str, float]) -> dict[str, float]:
    """Softmax over candidates: {candidate: summed answer logprob} -> {candidate: probability}."""
    if not logps:
        return {}
    top = max(logps.values())
    exp = {c: math.exp(v - top) for c, v in logps.items()}
    total = sum(exp.values())
    return {c: v / total for c, v in exp.items()}


def speaking_reward(before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]], truth: str, negate: bool = False) -> float | None:
    """Mean over listeners (the keys both maps share) of ``after[l][truth] - before[l][truth]``, negated
    when ``negate``; None when no listener has a belief."""
    listeners = [l for l in before if l in after]
    if not listeners:
        return None
    delta = sum(after[l].get(truth, 0.0) - before[l].get(truth, 0.0) for l in listeners) / len(listeners)
    return -delta if negate else delta


# ----- reading a model ---------------------------------------------------------------------------
def can_listen(policy: Any) -> bool:
    """Whether a seated policy has a model whose scores can be read (an LLM agent on a scoring engine)."""
    return callable(getattr(getattr(policy, "engine", None), "score", None)) and callable(getattr(policy, "prompt_ids", None))


def belief_request(agent: Any, game: str, player: str, observation: str, question: str, answers: Mapping[str, str]) -> tuple[list[int], dict[str, list[int]]]:
    """The token ids to score for one belief: the agent's own rendering of ``observation`` followed by
    ``question`` (as for a move), and each candidate's answer text."""
    view = PlayerView(game=game, player=player, observation=f"{observation}\n{question}")
    tok = agent.engine.tokenizer
    return agent.prompt_ids(view), {c: list(tok.encode(text, add_special_tokens=False)) for c, text in answers.items()}


def read_belief(engine: Any, prompt: list[int], answers: Mapping[str, list[int]]) -> dict[str, float]:
    """Each candidate scores the summed logprob of its answer ids right after ``prompt``; normalised."""
    return normalise({c: float(sum(engine.score(prompt, ids))) for c, ids in answers.items()})


def belief(agent: Any, game: str, player: str, observation: str, question: str, answers: Mapping[str, str]) -> dict[str, float]:
    """``player``'s belief over the candidates of ``answers``, read from ``agent`` (an LLM agent)."""
    return read_belief(agent.engine, *belief_request(agent, game, player, observation, question, answers))


@dataclass
class BeliefScores:
    """What a set of discussions gave, per seat and overall."""

    #: listener -> mean probability on the truth over all its snapshots (the listening target's fit)
    listening: dict[str, float] = field(default_factory=dict)
    #: speaker -> summed speaking reward of its messages (only messages some listener could read)
    speaking: dict[str, float] = field(default_factory=dict)
    #: every listener belief read: (listener, discussion index, snapshot index) -> belief
    beliefs: dict[tuple[str, int, int], dict[str, float]] = field(default_factory=dict)
    truths: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """``belief_accuracy`` (share of beliefs whose unique most likely candidate is the truth),
        ``belief_truth`` (mean probability on the truth) and ``listening_points`` (beliefs read);
        empty without beliefs. A game may rename them (``TextGame.belief_metric_names``)."""
        if not self.beliefs:
            return {}
        right, mass = 0, 0.0
        for (_, d, _), b in self.beliefs.items():
            truth = self.truths[d]
            top = max(b.values())
            right += b[truth] == top and sum(v == top for v in b.values()) == 1
            mass += b[truth]
        n = len(self.beliefs)
        return {"belief_accuracy": right / n, "belief_truth": mass / n, "listening_points": float(n)}


#: one belief to read: (agent's identity, listener, observation text)
_Key = tuple[int, str, str]


def _requests(game: str, discussions: Sequence[Discussion], seated: Mapping[str, Any]) -> dict[_Key, tuple[Any, list[int], dict[str, list[int]]]]:
    """Every distinct belief the discussions need, rendered to token ids (tokenizer work only)."""
    out: dict[_Key, tuple[Any, list[int], dict[str, list[int]]]] = {}
    for d in discussions:
        for snapshot in d.snapshots:
            for listener, text in snapshot.items():
                agent = seated.get(listener)
                key = (id(agent), listener, text)
                if can_listen(agent) and listener in d.answers and key not in out:
                    out[key] = (agent, *belief_request(agent, game, listener, text, d.question, d.answers[listener]))
    return out


def _read_all(requests: Mapping[_Key, tuple[Any, list[int], dict[str, list[int]]]]) -> dict[_Key, dict[str, float]]:
    """Every requested belief, read through the agents' engines (model forward passes only)."""
    return {key: read_belief(agent.engine, prompt, answers) for key, (agent, prompt, answers) in requests.items()}


def _assemble(discussions: Sequence[Discussion], seated: Mapping[str, Any], read: Mapping[_Key, dict[str, float]]) -> BeliefScores:
    out = BeliefScores(truths=[d.truth for d in discussions])
    sums: dict[str, list[float]] = {}
    for d_index, d in enumerate(discussions):
        for s_index, snapshot in enumerate(d.snapshots):
            for listener, text in snapshot.items():
                b = read.get((id(seated.get(listener)), listener, text))
                if b is None:
                    continue
                out.beliefs[(listener, d_index, s_index)] = b
                sums.setdefault(listener, []).append(b[d.truth])
        for u in d.utterances:
            before = {l: out.beliefs[(l, d_index, u.before)] for l in u.listeners if (l, d_index, u.before) in out.beliefs}
            after = {l: out.beliefs[(l, d_index, u.after)] for l in u.listeners if (l, d_index, u.after) in out.beliefs}
            reward = speaking_reward(before, after, d.truth, u.negate)
            if reward is not None:
                out.speaking[u.speaker] = out.speaking.get(u.speaker, 0.0) + reward
    out.listening = {l: sum(v) / len(v) for l, v in sums.items()}
    return out


def score_discussions(game: str, discussions: Sequence[Discussion], seated: Mapping[str, Any]) -> BeliefScores:
    """Read every listener's belief at every snapshot, then the listening and speaking signals.

    ``seated`` maps players to their policies; only listeners for which :func:`can_listen` holds
    are read. A belief is read once per (listener, observation text) and reused.
    """
    return _assemble(discussions, seated, _read_all(_requests(game, discussions, seated)))


async def score_discussions_async(game: str, discussions: Sequence[Discussion], seated: Mapping[str, Any]) -> BeliefScores:
    """:func:`score_discussions` for the episode runner: prompts are rendered on the calling thread
    (tokenizers are not shared across threads), the forward passes run on a worker thread so other
    episodes keep playing meanwhile."""
    requests = _requests(game, discussions, seated)
    read = await asyncio.to_thread(_read_all, requests) if requests else {}
    return _assemble(discussions, seated, read)
