"""Belief probes (arena.belief) in any Arena game that declares a hidden target.

A small game defined here: the teller sees a secret number and says one message, the guesser then
names a number. The game only returns its discussion as text (``discussions()``); with the generic
``belief_scoring`` switch, ``TextGame.after_play`` reads the seated model's beliefs and the
listening and speaking signals reach the episode's reward components, returns and metrics.

The model is the session's untrained tiny model: its beliefs are a pure function of its scores, so
what is asserted is that the signals are those scores (a by-hand recomputation), that they respond
to what was said, and that they flow into the episode. No sign is asserted.
"""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

import arena
from arena.agents.base import PlayerView, ScriptedPolicy
from arena.belief import Discussion, Utterance
from arena.game import IllegalMove, TextGame, clean_text
from arena.records import Matchup
from arena.rollout import play_episode

GAME = "secret_number-v0"  # never registered: played through play_episode's env_factory
NUMBERS = ("1", "2", "3")
QUESTION = "Question: what is the secret number?"


class SecretNumber(TextGame):
    """The teller knows a secret number and tells the guesser in one message; the guesser then names
    a number. Both score 1 when the guess names the secret number."""

    players = ("teller", "guesser")

    def setup(self, rng: np.random.Generator) -> None:
        self.secret = NUMBERS[int(rng.integers(len(NUMBERS)))]
        self.message: str | None = None
        self.guess: str | None = None
        self.snapshots = [{"guesser": self.observe_text("guesser")}]  # what the listener saw, before and after

    def to_move(self) -> str:
        return "teller" if self.message is None else "guesser"

    def observe_text(self, player: str) -> str:
        lines = ["Secret number: the teller knows a number (1, 2 or 3) and tells the guesser."]
        if player == "teller":
            lines.append(f"[private] The secret number is {self.secret}.")
        lines.append("The teller has not spoken yet." if self.message is None else f"The teller said: '{self.message}'")
        if not self.is_over():
            lines.append("Tell the guesser the number." if player == "teller" else "Name the number.")
        return "\n".join(lines)

    def apply(self, player: str, action: str) -> None:
        if player == "teller":
            text = clean_text(action, 80)
            if not text:
                raise IllegalMove("an empty message")
            self.message = text
            self.snapshots.append({"guesser": self.observe_text("guesser")})
        else:
            self.guess = action

    def is_over(self) -> bool:
        return self.guess is not None

    def right(self) -> float:
        return float(self.guess is not None and re.search(rf"\b{self.secret}\b", self.guess) is not None)

    def returns(self) -> dict[str, float]:
        return {"teller": self.right(), "guesser": self.right()}

    def metrics(self) -> dict[str, float]:
        return {"right": self.right()}

    def private_info(self) -> dict[str, list[str]]:
        return {"teller": [f"[private] The secret number is {self.secret}."]}

    def discussions(self) -> list[Discussion]:
        return [
            Discussion(
                question=QUESTION,
                truth=self.secret,
                answers={"guesser": {c: f"The secret number is {c}." for c in NUMBERS}},
                snapshots=list(self.snapshots),
                utterances=[Utterance("teller", ("guesser",), 0, 1)] if len(self.snapshots) > 1 else [],
            )
        ]


class Teller(ScriptedPolicy):
    """Names the secret number (or, lying, the next one)."""

    def __init__(self, lie: bool = False):
        self.lie = lie
        self.policy_id = "scripted/liar" if lie else "scripted/truthful"

    def choose(self, view: PlayerView) -> str:
        secret = re.search(r"The secret number is (\w+)\.", view.observation).group(1)
        said = NUMBERS[(NUMBERS.index(secret) + 1) % len(NUMBERS)] if self.lie else secret
        return f"The number is {said}."


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from arena.agents.llm import LLMAgent
    from arena.engines.base import SamplingParams
    from arena.engines.hf import HFEngine

    return LLMAgent(HFEngine(tiny_model_dir), "main", sampling=SamplingParams(max_new_tokens=8))


def _play(guesser, teller: ScriptedPolicy, seed: int = 3, **kwargs):
    seats = {"teller": teller.policy_id, "guesser": guesser.policy_id}
    matchup = Matchup(game=GAME, seed=seed, seats=seats, game_kwargs=kwargs)
    return asyncio.run(play_episode(matchup, {teller.policy_id: teller, guesser.policy_id: guesser}, env_factory=lambda m: SecretNumber(**m.game_kwargs)))


def _belief_by_hand(agent, observation: str) -> dict[str, float]:
    prompt = agent.prompt_ids(PlayerView(GAME, "guesser", f"{observation}\n{QUESTION}"))
    tok = agent.engine.tokenizer
    logps = {c: sum(agent.engine.score(prompt, tok.encode(f"The secret number is {c}.", add_special_tokens=False))) for c in NUMBERS}
    z = np.logaddexp.reduce(list(logps.values()))
    return {c: float(np.exp(v - z)) for c, v in logps.items()}


def test_a_model_seat_gets_listening_and_speaking_signals_in_a_game_that_declares_a_hidden_target(model):
    ep = _play(model, Teller(), belief_scoring=True, listening_weight=1.0, speaking_weight=0.5)
    comps, metrics = ep.reward_components, ep.metrics
    secret = next(c for c in NUMBERS if f"The number is {c}." in ep.turns[0].action)
    # the signals are the model's own scores: its belief before and after the teller's message
    env = SecretNumber()
    env.reset(seed=3)
    before = _belief_by_hand(model, env.observe_text("guesser"))
    env.step(ep.turns[0].action)
    after = _belief_by_hand(model, env.observe_text("guesser"))
    assert comps["listening/guesser"] == pytest.approx((before[secret] + after[secret]) / 2, abs=1e-9)
    assert comps["speaking/teller"] == pytest.approx(after[secret] - before[secret], abs=1e-9)
    assert comps["speaking/teller"] != 0.0 and 0.0 < comps["listening/guesser"] < 1.0
    # a scripted seat has no belief and the guesser said nothing anyone listened to
    assert "listening/teller" not in comps and "speaking/guesser" not in comps
    # the weights put them into the returns, and the belief metrics into the episode's metrics
    assert ep.returns["guesser"] == pytest.approx(metrics["right"] + 1.0 * comps["listening/guesser"])
    assert ep.returns["teller"] == pytest.approx(metrics["right"] + 0.5 * comps["speaking/teller"])
    assert metrics["listening_points"] == 2
    assert metrics["belief_truth"] == pytest.approx(comps["listening/guesser"])
    top = [max(b, key=b.get) for b in (before, after)]
    assert metrics["belief_accuracy"] == pytest.approx(np.mean([t == secret for t in top]))
    # the model seat played the guesser's move itself
    assert ep.turns[1].policy_id == "main" and ep.turns[1].completion_ids
    # without belief_scoring nothing is read
    plain = _play(model, Teller())
    assert not any(k.startswith(("listening/", "speaking/")) for k in plain.reward_components)
    assert "belief_truth" not in plain.metrics and plain.returns["guesser"] == plain.metrics["right"]


def test_the_speaking_signal_responds_to_what_was_said(model):
    truth = _play(model, Teller(), belief_scoring=True).reward_components["speaking/teller"]
    lie = _play(model, Teller(lie=True), belief_scoring=True).reward_components["speaking/teller"]
    assert truth != pytest.approx(lie, abs=1e-5)
    assert -1.0 <= truth <= 1.0 and -1.0 <= lie <= 1.0


class _FixedScorer:
    """A fake listener (no model): "renders" a prompt as the observation's characters and scores an
    answer's number from a table keyed by whether the teller has spoken."""

    policy_id, version = "fake", 0

    class _Tok:
        def encode(self, text, add_special_tokens=False):
            return [NUMBERS.index(text.rstrip(".").rsplit(" ", 1)[1])]

    def __init__(self):
        self.engine, self.tokenizer = self, self._Tok()

    def prompt_ids(self, view):
        return [ord(c) for c in view.observation]

    def score(self, prompt, continuation):
        spoke = "The teller said" in "".join(map(chr, prompt))
        table = (0.2, 0.7, 0.1) if spoke else (1 / 3, 1 / 3, 1 / 3)
        return [float(np.log(table[continuation[0]]))]

    async def act(self, view):
        from arena.agents.base import Action

        return Action(text="2")


def test_a_game_names_the_belief_metrics_in_its_own_words():
    class Renamed(SecretNumber):
        belief_metric_names = {"belief_accuracy": "guess_accuracy", "belief_truth": "belief_secret"}

    matchup = Matchup(game=GAME, seed=0, seats={"teller": "scripted/truthful", "guesser": "fake"}, game_kwargs={"belief_scoring": True})
    ep = asyncio.run(play_episode(matchup, {"scripted/truthful": Teller(), "fake": _FixedScorer()}, env_factory=lambda m: Renamed(**m.game_kwargs)))
    secret = next(c for c in NUMBERS if c in ep.turns[0].action)
    p = {"1": 0.2, "2": 0.7, "3": 0.1}[secret]
    assert ep.metrics["belief_secret"] == pytest.approx((1 / 3 + p) / 2)
    assert ep.metrics["guess_accuracy"] == pytest.approx(0.5 if secret == "2" else 0.0)  # 1/3 each is no unique top
    assert "belief_truth" not in ep.metrics and ep.metrics["listening_points"] == 2
    assert ep.reward_components["speaking/teller"] == pytest.approx(p - 1 / 3)


def test_belief_scoring_needs_a_game_with_discussions():
    with pytest.raises(ValueError, match="belief_scoring: RepeatedMatrixGame has no discussions"):
        arena.make("repeated_matrix-v0", belief_scoring=True)
    assert arena.make("repeated_matrix-v0").config.belief_scoring is False
