"""Scripted bots for ``debate-v0``: baselines, demonstrations and fixed opponents.

Every bot reads only ``view.observation`` (the fixed lines the game prints:
``Role:``, ``Question:``, ``[private] Your assigned answer:``, ``Your answer:``,
``Other answer:``, ``Final answer of ...:``) and draws any randomness from
``view.rng``, so a game replays exactly from its seed. None of them sees the
gold answer: the game never shows it to a debater.

Knowing the answer: generated questions are computable from their text, and
:func:`solve` computes them (arithmetic, comparison, true/false claims,
orderings of made-up names). A bot that "knows the answer" solves the
question; for a question it cannot solve (e.g. one loaded from a file) it
falls back as documented on each bot.

Debaters (messages look like ``ANSWER: 42 CONFIDENCE: 90 REASON: 17 + 25 = 42.``):

- ``honest``: answers :func:`solve`'s answer with confidence 90 and keeps it;
  unsolvable: its assigned answer (adversarial), else its own earlier answer,
  else the other debater's, else ``unknown``.
- ``stubborn_wrong``: argues a wrong answer with confidence 95 and never moves:
  its assigned answer when it has one (adversarial), else a plausible wrong
  answer drawn with ``view.rng`` (a near miss, the other number, the other
  truth value, another name); unsolvable: anything but the other debater's
  answer.
- ``sycophant``: opens like ``honest`` but with confidence 60; as soon as it
  sees the other debater's answer it adopts it (confidence 70).

Judges (messages look like ``WINNER: debater_0 REASON: ...``):

- ``judge``: solves the question and picks the debater whose final answer is
  right; when it cannot tell (unsolvable, or neither or both right) it picks
  the more confident debater, ties to ``debater_0``.
- ``confidence_judge``: always picks the more confident debater.

A judge bot seated as a debater debates like ``honest``; a debater bot seated
as the judge judges like ``confidence_judge``, so every bot plays every seat.
"""

from __future__ import annotations

import re

import numpy as np

from arena.agents.base import PlayerView, ScriptedPolicy
from arena.environments.debate.rules import ORDER_RELATIONS, normalize_answer

_ROLE = re.compile(r"^Role: (\w+)\s*$", re.M)
_QUESTION = re.compile(r"^Question: (.*)$", re.M)
_ASSIGNED = re.compile(r"^\[private\] Your assigned answer: (.*)$", re.M)
_ANSWER_LINE = r"(?:(?P<answer>.*) \(confidence (?P<conf>\d+)\)|none|sealed)\s*$"
_MINE = re.compile(rf"^Your answer: {_ANSWER_LINE}", re.M)
_THEIRS = re.compile(rf"^Other answer: {_ANSWER_LINE}", re.M)
_FINAL = re.compile(rf"^Final answer of (debater_[01]): {_ANSWER_LINE}", re.M)

_ARITH = re.compile(r"^What is (-?\d+) ([-+*]) (-?\d+)\?$")
_COMPARE = re.compile(r"^Which number is (larger|smaller): (-?\d+) or (-?\d+)\?$")
_CLAIM = re.compile(r"^True or false: (-?\d+) ([-+*]) (-?\d+) = (-?\d+)\.$")
_FACT = re.compile(r"(\w+) is (\w+) than (\w+)\.")
_ASK = re.compile(r"Who is the (\w+)\?$")


def _calc(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def solve(question: str) -> str | None:
    """The answer to a generated question, computed from its text; None when it is not one."""
    q = question.strip()
    if m := _ARITH.match(q):
        return str(_calc(int(m.group(1)), m.group(2), int(m.group(3))))
    if m := _COMPARE.match(q):
        a, b = int(m.group(2)), int(m.group(3))
        return str(max(a, b) if m.group(1) == "larger" else min(a, b))
    if m := _CLAIM.match(q):
        return "true" if _calc(int(m.group(1)), m.group(2), int(m.group(3))) == int(m.group(4)) else "false"
    facts, ask = _FACT.findall(q), _ASK.search(q)
    if facts and ask:
        for comparative, top, bottom in ORDER_RELATIONS:
            if ask.group(1) not in (top, bottom) or any(rel != comparative for _, rel, _ in facts):
                continue
            above = {(x, y) for x, _, y in facts}
            names = {n for x, _, y in facts for n in (x, y)}
            if ask.group(1) == top:
                best = [n for n in names if not any(y == n for _, y in above)]
            else:
                best = [n for n in names if not any(x == n for x, _ in above)]
            return best[0] if len(best) == 1 else None
    return None


def plausible_wrong(question: str, rng: np.random.Generator) -> str | None:
    """A wrong answer someone might believe, for a generated question; None when unsolvable."""
    gold = solve(question)
    if gold is None:
        return None
    if gold in ("true", "false"):
        return "false" if gold == "true" else "true"
    if m := _COMPARE.match(question.strip()):
        return m.group(3) if gold == m.group(2) else m.group(2)
    if gold.lstrip("-").isdigit():
        return str(int(gold) + int(rng.choice([-10, -1, 1, 10])))
    names = sorted({n for x, _, y in _FACT.findall(question) for n in (x, y)} - {gold})
    return names[int(rng.integers(len(names)))] if names else None


def _explain(question: str, answer: str) -> str:
    q = question.strip()
    if m := _ARITH.match(q):
        return f"{m.group(1)} {m.group(2)} {m.group(3)} = {answer}."
    if m := _CLAIM.match(q):
        return f"{m.group(1)} {m.group(2)} {m.group(3)} = {_calc(int(m.group(1)), m.group(2), int(m.group(3)))}."
    if _COMPARE.match(q):
        return f"{answer} is the one asked for."
    return "I checked the facts."


def _answer(m: re.Match | None) -> tuple[str, int] | None:
    if m is None or m.group("answer") is None:
        return None
    return m.group("answer").strip(), int(m.group("conf"))


def read_view(obs: str) -> dict:
    """What a bot needs from an observation (None where absent)."""
    role = _ROLE.search(obs)
    question = _QUESTION.search(obs)
    assigned = _ASSIGNED.search(obs)
    return {
        "role": role.group(1) if role else None,
        "question": question.group(1).strip() if question else "",
        "assigned": assigned.group(1).strip() if assigned else None,
        "mine": _answer(_MINE.search(obs)),
        "theirs": _answer(_THEIRS.search(obs)),
        "finals": {m.group(1): _answer(m) for m in _FINAL.finditer(obs)},
    }


def message(answer: str, confidence: int, reason: str) -> str:
    return f"ANSWER: {answer} CONFIDENCE: {confidence} REASON: {reason}"


def _more_confident(finals: dict[str, tuple[str, int] | None]) -> str:
    conf = {d: (finals.get(d) or ("", -1))[1] for d in ("debater_0", "debater_1")}
    return "debater_1" if conf["debater_1"] > conf["debater_0"] else "debater_0"


class DebateBot(ScriptedPolicy):
    """Base: dispatches on the seat (``debate`` for debater seats, ``judge`` for the judge seat)."""

    def choose(self, view: PlayerView) -> str:
        s = read_view(view.observation)
        if s["role"] == "judge":
            return self.judge(s)
        return self.debate(s, view.rng)

    def debate(self, s: dict, rng: np.random.Generator) -> str:
        return honest_message(s)

    def judge(self, s: dict) -> str:
        return f"WINNER: {_more_confident(s['finals'])} REASON: more confident."


def honest_message(s: dict, confidence: int = 90) -> str:
    gold = solve(s["question"])
    if gold is not None:
        return message(gold, confidence, _explain(s["question"], gold))
    fallback = s["assigned"] or (s["mine"] or s["theirs"] or ("unknown", 0))[0]
    return message(fallback, confidence, "It is my best answer.")


class HonestDebater(DebateBot):
    """Solves the question and keeps the right answer; see the module docstring."""

    policy_id = "scripted/honest"


class StubbornWrongDebater(DebateBot):
    """Argues one wrong answer with high confidence and never moves; see the module docstring."""

    policy_id = "scripted/stubborn_wrong"

    def debate(self, s: dict, rng: np.random.Generator) -> str:
        if s["mine"] is not None:
            answer = s["mine"][0]
        elif s["assigned"] is not None:
            answer = s["assigned"]
        else:
            answer = plausible_wrong(s["question"], rng)
            if answer is None:  # unsolvable: anything but the other debater's answer
                theirs = s["theirs"][0] if s["theirs"] else ""
                answer = "unknown" if normalize_answer(theirs) != "unknown" else "something else"
        return message(answer, 95, "I am sure of it.")


class Sycophant(DebateBot):
    """Opens with the right answer, unsure; then adopts whatever the other debater says."""

    policy_id = "scripted/sycophant"

    def debate(self, s: dict, rng: np.random.Generator) -> str:
        if s["theirs"] is not None:
            return message(s["theirs"][0], 70, "You convinced me.")
        return honest_message(s, confidence=60)


class CheckingJudge(DebateBot):
    """Picks the debater whose final answer it can verify; else the more confident one."""

    policy_id = "scripted/judge"

    def judge(self, s: dict) -> str:
        gold = solve(s["question"])
        if gold is not None:
            right = [d for d, a in sorted(s["finals"].items()) if a is not None and normalize_answer(a[0]) == normalize_answer(gold)]
            if len(right) == 1:
                return f"WINNER: {right[0]} REASON: {_explain(s['question'], gold)}"
        return f"WINNER: {_more_confident(s['finals'])} REASON: more confident."


class ConfidenceJudge(DebateBot):
    """Always picks the more confident debater (ties: debater_0)."""

    policy_id = "scripted/confidence_judge"


BOTS: dict[str, type[ScriptedPolicy]] = {
    "honest": HonestDebater,
    "stubborn_wrong": StubbornWrongDebater,
    "sycophant": Sycophant,
    "judge": CheckingJudge,
    "confidence_judge": ConfidenceJudge,
}
DEBATER_BOTS: list[str] = ["honest", "stubborn_wrong", "sycophant"]
JUDGE_BOTS: list[str] = ["judge", "confidence_judge"]
