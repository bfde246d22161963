"""Debate: two debaters argue about a question with a gold answer; a judge decides (``debate-v0``).

Sources: Stengel-Eskin et al., "Teaching Models to Balance Resisting and
Accepting Persuasion" (2025): two models answer, then discuss, and each may
keep or change its answer; preference pairs from debate trees teach a model to
resist persuasion toward a wrong answer and accept persuasion toward a right
one. The adversarial variant is zero-sum debate with a judge (Irving et al.,
"AI safety via debate"; "Reward Design for Justifiable Sequential
Decision-Making"). Tree branching is generic (:mod:`arena.trainers.trees`);
debate's scores and pair labels for it are in :mod:`.trees`; this file holds
the rules only.

Roles
    ``debater_0`` and ``debater_1``; with ``judge="model"`` also ``judge``, a
    seat that reads the transcript and names a winner. With ``judge="oracle"``
    (the default) there is no judge seat: a rule that knows the gold answer
    scores the game.

Questions
    Each has a gold answer (plus accepted aliases) and plausible wrong answers.
    By default they are generated from the episode's rng (``question_kinds``,
    operands up to ``max_operand``); each kind is computable from its text, so a
    scripted bot can solve it:

    - ``arithmetic``: ``What is 17 + 25?`` (``+``, ``-``, ``*``); wrong answers
      are near misses (off by one or ten, the wrong operation).
    - ``comparison``: ``Which number is larger: 37 or 52?`` (or ``smaller``);
      the wrong answer is the other number.
    - ``true_false``: ``True or false: 17 + 25 = 43.``; the claim is right half
      the time; answers ``true`` / ``false``.
    - ``ordering`` (generated facts): ``Kavo is taller than Miru. Miru is
      taller than Tesa. Who is the tallest?`` (or the shortest; also older /
      younger, faster / slower); made-up names, facts in random order.

    With ``questions_path`` set, questions come from a JSONL file instead, one
    object per line (blank lines skipped)::

        {"question": "...", "answer": "...", "wrong_answers": ["...", ...],
         "aliases": ["..."], "id": "..."}

    ``aliases`` and ``id`` are optional; ``wrong_answers`` needs at least one
    entry, and none may equal the answer or an alias after normalisation. The
    file is validated when the game is built; a malformed file raises
    ``ValueError`` naming the file, the line and the field.

Protocol (turn order)
    ``first_speaker`` (default drawn at random per episode) opens. Openings:
    each debater gives an answer, a confidence and reasons; with
    ``blind_openings`` (default) the second opener does not see the first
    opening until it has given its own. Then ``rounds`` debate rounds (default
    2): in each, both debaters speak once, first speaker first, and each may
    keep or change its answer. With a model judge, the judge then gives its
    verdict and the game ends.

Moves
    A debater's message is free text that must hold ``ANSWER: <answer>`` and
    ``CONFIDENCE: <0-100>`` (case-insensitive, ``=`` also accepted, ``%``
    allowed after the number); the rest (an optional ``REASON:`` marker
    included) is its reasons, shown to everyone on one line, at most
    ``max_reason_chars`` characters. The answer runs to the end of the line, to
    ``|`` or ``;``, to the words ``CONFIDENCE``/``REASON``/``because``, or to a
    ``.``/``,`` followed by a space; a leading number is taken on its own
    (``ANSWER: 42 since ...`` answers ``42``). The judge's message must hold
    ``WINNER: debater_0`` or ``WINNER: debater_1`` (``WINNER: 0``/``1`` too).
    A message without its fields, with two different answers, confidences or
    winners, an empty answer, an answer longer than ``max_answer_chars`` or a
    confidence outside 0-100 is an illegal move: the base class re-prompts the
    player up to ``max_illegal_retries`` times with the reason, and one more
    forfeits (the game ends; the offender gets ``forfeit_penalty``).

    Answers are compared after :func:`normalize_answer` (case, spaces,
    surrounding punctuation and quotes ignored; ``42.0``, ``042`` and ``42``
    are equal).

What each player sees (``observe_text``)
    Its role, the question, the scoring rule, the speaking order, the
    transcript so far (a sealed opening shows as sealed), both current answers
    with confidences, the phase and whose turn it is. Lines bots can parse::

        Role: debater_0
        Question: What is 17 + 25?
        [private] Your assigned answer: 42       (adversarial only)
        Your answer: 42 (confidence 90)          (or: none)
        Other answer: 41 (confidence 95)         (or: none / sealed)
        Phase: round 1 of 2                      (or: opening / verdict / over)
        Status: your turn                        (or: waiting for ... / game over: ...)

    The judge sees the whole transcript and ``Final answer of debater_0: 42
    (confidence 90)`` lines; with ``judge_sees_gold`` (a reference-guided
    judge) also ``[private] Reference answer: 42``. Debaters never see the gold
    answer, not even when the game is over (only the verdict). Reasons are shown
    on one line with control characters and square brackets replaced, so a
    debater can never forge a ``[private]`` line or a line bots parse.

Variants and rewards (paid once, at the end; zero until then)
    ``cooperative`` (default): each debater scores ``correct_reward`` if its
    own final answer is right, and both get ``team_bonus`` more when both final
    answers are right. A model judge names the team's answer: it scores
    ``correct_reward`` when the answer it picks is right; its verdict does not
    change the debaters' rewards.

    ``adversarial``: sides are assigned and shown privately to each debater
    (``[private] Your assigned answer: ...``): with ``sides="fixed"``
    debater_0 must defend the gold answer and debater_1 a wrong answer drawn
    from the question's wrong answers; with ``sides="random"`` a coin flip
    decides which debater defends the gold. The winner gets ``+win_reward``,
    the loser ``-win_reward``. The oracle judge picks the debater whose final
    answer is right, and calls a draw (0 each) if both or neither are right; a
    model judge picks freely, but identical final answers are a draw. A
    debater that forfeits loses. The model judge scores ``correct_reward``
    when the debater it picks holds a right final answer.

    A forfeiting debater's final answer counts as wrong; a judge that forfeits
    gives no verdict (a draw in the adversarial variant). The group return is
    the base class's default, the mean of the seats' returns.

Reward components
    ``correct/<debater>`` (its correctness reward), ``team_bonus`` (paid to
    each debater), ``verdict/<debater>`` (+/- win_reward, adversarial),
    ``judge_correct`` (model judge).

Metrics
    ``initial_accuracy`` and ``final_accuracy`` (mean over both debaters of
    opening / final correctness) and per debater ``initial_correct/<d>``,
    ``final_correct/<d>``; ``flips_to_right`` and ``flips_to_wrong`` (answer
    changes from a wrong to the right answer and from the right to a wrong one,
    both debaters, and per debater as ``flips_to_right/<d>``...);
    ``changed_answer/<d>`` (final differs from opening); ``team_correct`` (the
    team's answer is right: the judge's pick, else the agreed answer, else the
    more confident final answer, ties to the first speaker) and
    ``any_initial_correct`` (at least one opening was right: compare
    ``team_correct`` with the best member's ``initial_correct/<d>`` mean over
    episodes); ``first_speaker`` (0 or 1), ``first_speaker_final_correct`` and
    ``second_speaker_final_correct`` (the speaking-order effect, averaged over
    episodes); ``contested`` (final answers differ); ``confidence_initial/<d>``
    and ``confidence_final/<d>``; with a model judge ``judge_agreement`` (the
    picked debater's final answer is right; absent without a verdict) and
    ``first_speaker_won``; ``question_kind/<kind>`` (1 for the episode's kind).

Version history
    v0: first version: generated and JSONL questions, cooperative and
        adversarial variants, oracle and model judges, blind openings.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import unicodedata
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from arena.game import GameConfig, IllegalMove, TextGame, clean_text

DEBATERS: tuple[str, str] = ("debater_0", "debater_1")
JUDGE = "judge"
QUESTION_KINDS = ("arithmetic", "comparison", "true_false", "ordering")
QuestionKind = Literal["arithmetic", "comparison", "true_false", "ordering"]

#: ``(comparative, superlative of the top, superlative of the bottom)`` for ordering questions
ORDER_RELATIONS = (("taller", "tallest", "shortest"), ("older", "oldest", "youngest"), ("faster", "fastest", "slowest"))
_SYLLABLES = ("ka", "vo", "mi", "ru", "te", "sa", "lo", "ne", "pi", "zu", "bo", "ri", "da", "fe", "go", "hu")


# ----- answers ---------------------------------------------------------------------------------
_NUMBER = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$")
_STRIP = " \t'\"`.,;:!?()[]{}"


def normalize_answer(text: str) -> str:
    """The form answers are compared in: NFKC, lower case, single spaces, no surrounding
    punctuation or quotes; numbers in canonical form (``42.0``, ``042``, ``+42`` -> ``42``)."""
    t = " ".join(unicodedata.normalize("NFKC", str(text)).lower().split()).strip(_STRIP)
    if _NUMBER.match(t):
        try:
            d = Decimal(t.replace(",", ""))
        except InvalidOperation:
            return t
        if d == d.to_integral_value():
            return str(int(d))
        return format(d.normalize(), "f")
    return t


class Question(BaseModel):
    """One question with its gold answer: a JSONL line's schema, and what the generator builds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    wrong_answers: list[str] = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    id: str | None = None
    kind: str = "file"

    @field_validator("question")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    @model_validator(mode="after")
    def _wrong_is_wrong(self) -> Question:
        if not normalize_answer(self.answer):
            raise ValueError("answer is empty after normalisation")
        gold = self.accepted()
        for i, w in enumerate(self.wrong_answers):
            if not normalize_answer(w):
                raise ValueError(f"wrong_answers[{i}] is empty after normalisation")
            if normalize_answer(w) in gold:
                raise ValueError(f"wrong_answers[{i}] ({w!r}) equals the answer or an alias")
        return self

    def accepted(self) -> set[str]:
        """The normalised answers that count as right."""
        return {normalize_answer(a) for a in [self.answer, *self.aliases]}

    def is_right(self, answer: str | None) -> bool:
        return answer is not None and normalize_answer(answer) in self.accepted()


class QuestionBank:
    """Questions loaded from a file; immutable, so copies of a game share one bank."""

    def __init__(self, questions: tuple[Question, ...], source: str):
        self.questions = questions
        self.source = source

    def __len__(self) -> int:
        return len(self.questions)

    def __deepcopy__(self, memo: dict) -> QuestionBank:
        return self


def load_questions(path: str | Path) -> QuestionBank:
    """Read and validate a JSONL question file; errors name the file, the line and the field."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"questions file not found: {p}")
    st = p.stat()
    return _load_questions(str(p.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _load_questions(path: str, mtime_ns: int, size: int) -> QuestionBank:
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(data, dict):
                raise ValueError(f"{path}:{lineno}: each line must be a JSON object, got {type(data).__name__}")
            try:
                out.append(Question.model_validate(data))
            except ValidationError as e:
                err = e.errors()[0]
                field = ".".join(str(x) for x in err["loc"]) or "(line)"
                msg = err["msg"].removeprefix("Value error, ")
                raise ValueError(f"{path}:{lineno}: field '{field}': {msg}") from None
    if not out:
        raise ValueError(f"{path}: no questions (the file is empty)")
    return QuestionBank(tuple(out), path)


# ----- generated questions ---------------------------------------------------------------------
def generate_question(rng: np.random.Generator, kinds: tuple[str, ...] = QUESTION_KINDS, max_operand: int = 50) -> Question:
    """One question of a kind drawn from ``kinds``, all randomness from ``rng``."""
    kind = kinds[int(rng.integers(len(kinds)))]
    return _GENERATORS[kind](rng, max_operand)


def _operation(rng: np.random.Generator, max_operand: int) -> tuple[int, str, int, int]:
    op = "+-*"[int(rng.integers(3))]
    if op == "*":
        a, b = (int(x) for x in rng.integers(2, 13, size=2))
    else:
        a, b = (int(x) for x in rng.integers(2, max_operand + 1, size=2))
    value = a + b if op == "+" else a - b if op == "-" else a * b
    return a, op, b, value


def _arithmetic(rng: np.random.Generator, max_operand: int) -> Question:
    a, op, b, value = _operation(rng, max_operand)
    other = a - b if op == "+" else a + b if op == "-" else a + b
    near = [value + 1, value - 1, value + 10, value - 10, other]
    wrong = list(dict.fromkeys(str(x) for x in near if x != value))
    order = rng.permutation(len(wrong))
    return Question(question=f"What is {a} {op} {b}?", answer=str(value), wrong_answers=[wrong[i] for i in order[:3]], kind="arithmetic")


def _comparison(rng: np.random.Generator, max_operand: int) -> Question:
    a, b = (int(x) for x in rng.choice(np.arange(2, max(max_operand, 3) + 1), size=2, replace=False))
    larger = bool(rng.integers(2))
    gold, wrong = (max(a, b), min(a, b)) if larger else (min(a, b), max(a, b))
    word = "larger" if larger else "smaller"
    return Question(question=f"Which number is {word}: {a} or {b}?", answer=str(gold), wrong_answers=[str(wrong)], kind="comparison")


def _true_false(rng: np.random.Generator, max_operand: int) -> Question:
    a, op, b, value = _operation(rng, max_operand)
    truth = bool(rng.integers(2))
    shown = value if truth else value + int(rng.choice([-10, -2, -1, 1, 2, 10]))
    gold = "true" if truth else "false"
    return Question(question=f"True or false: {a} {op} {b} = {shown}.", answer=gold, wrong_answers=["false" if truth else "true"], kind="true_false")


def _name(rng: np.random.Generator) -> str:
    parts = [_SYLLABLES[int(i)] for i in rng.integers(len(_SYLLABLES), size=2)]
    return "".join(parts).capitalize()


def _ordering(rng: np.random.Generator, max_operand: int) -> Question:
    names: list[str] = []
    while len(names) < 3:
        n = _name(rng)
        if n not in names:
            names.append(n)
    comparative, top, bottom = ORDER_RELATIONS[int(rng.integers(len(ORDER_RELATIONS)))]
    facts = [f"{names[0]} is {comparative} than {names[1]}.", f"{names[1]} is {comparative} than {names[2]}."]
    if rng.integers(2):
        facts.reverse()
    ask_top = bool(rng.integers(2))
    gold = names[0] if ask_top else names[2]
    wrong = [n for n in names if n != gold]
    text = " ".join(facts) + f" Who is the {top if ask_top else bottom}?"
    return Question(question=text, answer=gold, wrong_answers=wrong, kind="ordering")


_GENERATORS = {"arithmetic": _arithmetic, "comparison": _comparison, "true_false": _true_false, "ordering": _ordering}


# ----- parsing messages -----------------------------------------------------------------------
_ANSWER = re.compile(r"\banswer\s*[:=]", re.IGNORECASE)
_CONFIDENCE = re.compile(r"\bconfidence\s*[:=]\s*([-+]?\d+(?:\.\d+)?)\s*%?", re.IGNORECASE)
_ANSWER_END = re.compile(r"\b(?:confidence|reasons?|because)\b|[\n\r|;]|[.,!?](?=\s|$)", re.IGNORECASE)
_LEADING_NUMBER = re.compile(r"[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?![\w.])")
_REASON_MARK = re.compile(r"\breasons?\s*[:=]\s*", re.IGNORECASE)
#: a message repeating a field more often than this is illegal (and parsing stays cheap)
MAX_FIELDS = 20
_WINNER = re.compile(r"\bwinner\s*[:=]\s*(?:debater[\s_-]*)?([01])(?!\w)", re.IGNORECASE)


def parse_message(text: str, max_answer_chars: int = 40) -> tuple[str, int, str]:
    """A debater's message as ``(answer, confidence, reasons)``; raise IllegalMove when malformed.

    ``answer`` is as written (trimmed); compare answers with :func:`normalize_answer`.
    """
    text = text[:20_000]  # bounded work on huge messages
    found = list(itertools.islice(_ANSWER.finditer(text), MAX_FIELDS + 1))
    if len(found) > MAX_FIELDS:
        raise IllegalMove(f"more than {MAX_FIELDS} ANSWER fields; give exactly one")
    answers, spans = [], []
    for m in found:
        start = m.end()
        while start < len(text) and text[start] in " \t":
            start += 1
        num = _LEADING_NUMBER.match(text, start)
        if num:
            end = num.end()
        else:
            stop = _ANSWER_END.search(text, start)
            end = stop.start() if stop else len(text)
        answers.append(text[start:end].strip().strip(_STRIP))
        spans.append((m.start(), end))
    if not answers:
        raise IllegalMove("no answer found: write ANSWER: <your answer> CONFIDENCE: <0-100>, then your reasons")
    if any(not normalize_answer(a) for a in answers):
        raise IllegalMove("the answer is empty: write ANSWER: <your answer>")
    if len({normalize_answer(a) for a in answers}) > 1:
        raise IllegalMove(f"found {len(answers)} different answers; give exactly one ANSWER")
    answer = answers[0]
    if len(answer) > max_answer_chars:
        raise IllegalMove(f"the answer is too long ({len(answer)} characters; at most {max_answer_chars}); put explanations in your reasons")
    confs = list(itertools.islice(_CONFIDENCE.finditer(text), MAX_FIELDS + 1))
    if len(confs) > MAX_FIELDS:
        raise IllegalMove(f"more than {MAX_FIELDS} CONFIDENCE fields; give exactly one")
    if not confs:
        raise IllegalMove("no confidence found: write CONFIDENCE: <0-100> after your answer")
    values = {float(c.group(1)) for c in confs}
    if len(values) > 1:
        raise IllegalMove(f"found {len(values)} different confidences; give exactly one CONFIDENCE")
    conf = values.pop()
    if not 0 <= conf <= 100:
        raise IllegalMove(f"the confidence must be between 0 and 100, got {conf:g}")
    spans += [c.span() for c in confs]
    reasons, last = [], 0
    for start, end in sorted(spans):
        if start >= last:
            reasons.append(text[last:start])
            last = end
        else:
            last = max(last, end)
    reasons.append(text[last:])
    reason = _REASON_MARK.sub(" ", " ".join(reasons))
    return answer, int(round(conf)), reason


def parse_verdict(text: str) -> str:
    """The judge's message: the debater it names as winner; raise IllegalMove when malformed."""
    picks = {f"debater_{m.group(1)}" for m in _WINNER.finditer(text[:20_000])}
    if not picks:
        raise IllegalMove("no verdict found: write WINNER: debater_0 or WINNER: debater_1")
    if len(picks) > 1:
        raise IllegalMove("both debaters named as winner; name exactly one")
    return picks.pop()


class DebateGame(TextGame):
    """Two debaters and a judge (rule or model) argue about one question; see the module docstring."""

    players: ClassVar[tuple[str, ...]] = (*DEBATERS, JUDGE)
    metadata: ClassVar[dict] = {"name": "debate_v0", "render_modes": ["human", "ansi"], "is_parallelizable": False}
    description: ClassVar[str] = "Two debaters answer a question with confidence and reasons, then debate for a few rounds; an oracle or a model judge decides."

    class Config(GameConfig):
        variant: Literal["cooperative", "adversarial"] = Field("cooperative", description="see the module docstring")
        judge: Literal["oracle", "model"] = Field("oracle", description="oracle: a rule that knows the gold answer (no seat); model: a judge seat")
        rounds: int = Field(2, ge=0, le=50, description="debate rounds after the openings; each debater speaks once per round")
        first_speaker: Literal["debater_0", "debater_1", "random"] = Field("random", description="who opens; random = drawn per episode")
        blind_openings: bool = Field(True, description="the second opener does not see the first opening before giving its own")
        sides: Literal["fixed", "random"] = Field(
            "fixed", description="adversarial: fixed = debater_0 defends the gold answer, debater_1 a wrong one; random = coin flip"
        )
        questions_path: str | None = Field(None, description="a JSONL file of questions; none = generate them")
        question_kinds: tuple[QuestionKind, ...] = Field(QUESTION_KINDS, min_length=1, description="kinds of generated questions")
        max_operand: int = Field(50, ge=3, le=10_000, description="largest operand of generated arithmetic and comparison questions")
        correct_reward: float = Field(1.0, description="a right final answer (cooperative); a judge's right pick")
        team_bonus: float = Field(0.5, description="cooperative: added to both debaters when both final answers are right")
        win_reward: float = Field(1.0, gt=0, description="adversarial: +win_reward to the winner, -win_reward to the loser")
        judge_sees_gold: bool = Field(False, description="model judge only: show it the gold answer (a reference-guided judge)")
        max_reason_chars: int = Field(200, ge=0, le=10_000, description="reasons longer than this are truncated when shown")
        max_answer_chars: int = Field(40, ge=1, le=1000, description="a longer answer is an illegal move")

        @model_validator(mode="after")
        def _check(self) -> DebateGame.Config:
            if self.judge_sees_gold and self.judge != "model":
                raise ValueError("judge_sees_gold needs judge='model' (the oracle judge has no seat to show it to)")
            return self

    config: Config

    def __init__(self, config: GameConfig | None = None, render_mode: str | None = None, **kwargs):
        super().__init__(config, render_mode, **kwargs)
        if self.config.judge == "oracle":  # no judge seat
            self.possible_agents = list(DEBATERS)
            self.observation_spaces = {p: self.observation_spaces[p] for p in DEBATERS}
            self.action_spaces = {p: self.action_spaces[p] for p in DEBATERS}
        self.bank = load_questions(self.config.questions_path) if self.config.questions_path else None

    # ----- rules -------------------------------------------------------------------------------
    def setup(self, rng: np.random.Generator) -> None:
        c = self.config
        if self.bank is not None:
            self.question = self.bank.questions[int(rng.integers(len(self.bank)))]
        else:
            self.question = generate_question(rng, tuple(c.question_kinds), c.max_operand)
        first = c.first_speaker if c.first_speaker != "random" else DEBATERS[int(rng.integers(2))]
        self.order = (first, self._other(first))
        self.assigned: dict[str, str] = {}
        if c.variant == "adversarial":
            wrong = self.question.wrong_answers[int(rng.integers(len(self.question.wrong_answers)))]
            gold_side = DEBATERS[int(rng.integers(2))] if c.sides == "random" else DEBATERS[0]
            self.assigned = {gold_side: self.question.answer, self._other(gold_side): wrong}
        self.schedule = list(self.order) * (1 + c.rounds) + ([JUDGE] if c.judge == "model" else [])
        self.slot = 0
        #: (player, phase, shown answer, confidence, shown reasons), in speaking order
        self.messages: list[tuple[str, str, str, int, str]] = []
        self.answers: dict[str, list[tuple[str, int]]] = {d: [] for d in DEBATERS}
        self.verdict: str | None = None
        self.forfeited_by: str | None = None

    @staticmethod
    def _other(debater: str) -> str:
        return DEBATERS[1] if debater == DEBATERS[0] else DEBATERS[0]

    def to_move(self) -> str:
        return self.schedule[min(self.slot, len(self.schedule) - 1)]

    def is_over(self) -> bool:
        return self.slot >= len(self.schedule) or self.forfeited_by is not None

    def phase(self) -> str:
        """``opening``, ``round k of T``, ``verdict`` or ``over``."""
        if self.is_over():
            return "over"
        if self.schedule[self.slot] == JUDGE:
            return "verdict"
        k = self.slot // 2
        return "opening" if k == 0 else f"round {k} of {self.config.rounds}"

    def apply(self, player: str, action: str) -> None:
        if player == JUDGE:
            self.verdict = parse_verdict(action)
        else:
            try:
                answer, conf, reason = parse_message(action, self.config.max_answer_chars)
            except IllegalMove:
                raise
            except Exception as e:  # a parser bug must not crash an episode
                raise IllegalMove(f"could not read the message ({type(e).__name__})") from None
            shown = clean_text(answer, self.config.max_answer_chars)
            self.messages.append((player, self.phase(), shown, conf, clean_text(reason, self.config.max_reason_chars)))
            self.answers[player].append((answer, conf))
        self.slot += 1

    def forfeit(self, player: str, reason: str) -> None:
        super().forfeit(player, reason)
        self.forfeited_by = player

    # ----- reading the state (bots, metrics and tree mode use these) ---------------------------
    def current_answer(self, debater: str) -> str | None:
        """The debater's latest answer as written, or None before it has spoken."""
        return self.answers[debater][-1][0] if self.answers[debater] else None

    def messages_by(self, player: str) -> int:
        """How many legal messages ``player`` has sent."""
        if player == JUDGE:
            return int(self.verdict is not None)
        return len(self.answers[player])

    def final_correct(self, debater: str) -> bool:
        """Whether the debater's final answer is right (a forfeiting debater's never is)."""
        return self.forfeited_by != debater and self.question.is_right(self.current_answer(debater))

    def initial_correct(self, debater: str) -> bool:
        return bool(self.answers[debater]) and self.question.is_right(self.answers[debater][0][0])

    def _same_final_answers(self) -> bool:
        a, b = (self.current_answer(d) for d in DEBATERS)
        return a is not None and b is not None and normalize_answer(a) == normalize_answer(b)

    def winner(self) -> str | None:
        """Adversarial winner at the end: forfeit, else the judge (oracle or model); None = draw."""
        if not self.is_over():
            return None
        if self.forfeited_by in DEBATERS:
            return self._other(self.forfeited_by)
        if self.config.judge == "model":
            return None if self.verdict is None or self._same_final_answers() else self.verdict
        right = [d for d in DEBATERS if self.final_correct(d)]
        return right[0] if len(right) == 1 else None

    def outcome_label(self) -> str | None:
        if not self.is_over():
            return None
        if self.config.variant == "adversarial":
            w = self.winner()
            return f"{w} wins" if w else "draw"
        answer = self.team_answer()
        return "no answer" if answer is None else ("correct" if self.question.is_right(answer) else "wrong")

    def team_answer(self) -> str | None:
        """The judge's pick, else the agreed answer, else the more confident final answer (ties: first speaker)."""
        if self.verdict is not None:
            return self.current_answer(self.verdict)
        finals = {d: self.answers[d][-1] for d in DEBATERS if self.answers[d] and self.forfeited_by != d}
        if not finals:
            return None
        best = max(self.order, key=lambda d: (d in finals, finals[d][1] if d in finals else -1, d == self.order[0]))
        return finals[best][0]

    # ----- outcome -----------------------------------------------------------------------------
    def returns(self) -> dict[str, float]:
        out = {p: 0.0 for p in self.possible_agents}
        if not self.is_over():
            return out
        for k, v in self._parts().items():
            kind, _, who = k.partition("/")
            if kind in ("correct", "verdict"):
                out[who] += v
            elif kind == "team_bonus":
                for d in DEBATERS:
                    out[d] += v
            elif kind == "judge_correct":
                out[JUDGE] += v
        return out

    def _parts(self) -> dict[str, float]:
        c = self.config
        parts: dict[str, float] = {}
        if c.variant == "cooperative":
            for d in DEBATERS:
                parts[f"correct/{d}"] = c.correct_reward * self.final_correct(d)
            parts["team_bonus"] = c.team_bonus * all(self.final_correct(d) for d in DEBATERS)
        else:
            w = self.winner()
            for d in DEBATERS:
                parts[f"verdict/{d}"] = 0.0 if w is None else (c.win_reward if d == w else -c.win_reward)
        if c.judge == "model":
            pick = self.verdict
            parts["judge_correct"] = c.correct_reward * float(pick is not None and self.final_correct(pick))
        return parts

    def reward_components(self) -> dict[str, float]:
        if not self.is_over():
            return {}
        return self._parts()

    def metrics(self) -> dict[str, float]:
        m: dict[str, float] = {}
        init = {d: float(self.initial_correct(d)) for d in DEBATERS}
        final = {d: float(self.final_correct(d)) for d in DEBATERS}
        m["initial_accuracy"] = sum(init.values()) / 2
        m["final_accuracy"] = sum(final.values()) / 2
        to_right = to_wrong = 0
        for d in DEBATERS:
            m[f"initial_correct/{d}"] = init[d]
            m[f"final_correct/{d}"] = final[d]
            r = w = 0
            seq = [normalize_answer(a) for a, _ in self.answers[d]]
            for prev, nxt in zip(seq, seq[1:]):
                if prev == nxt:
                    continue
                if self.question.is_right(nxt):
                    r += 1
                elif self.question.is_right(prev):
                    w += 1
            m[f"flips_to_right/{d}"], m[f"flips_to_wrong/{d}"] = float(r), float(w)
            to_right, to_wrong = to_right + r, to_wrong + w
            m[f"changed_answer/{d}"] = float(len(seq) > 1 and seq[0] != seq[-1])
            if self.answers[d]:
                m[f"confidence_initial/{d}"] = float(self.answers[d][0][1])
                m[f"confidence_final/{d}"] = float(self.answers[d][-1][1])
        m["flips_to_right"], m["flips_to_wrong"] = float(to_right), float(to_wrong)
        m["team_correct"] = float(self.question.is_right(self.team_answer()))
        m["any_initial_correct"] = float(any(init.values()))
        first, second = self.order
        m["first_speaker"] = float(DEBATERS.index(first))
        m["first_speaker_final_correct"] = final[first]
        m["second_speaker_final_correct"] = final[second]
        both = all(self.answers[d] for d in DEBATERS)
        m["contested"] = float(both and not self._same_final_answers())
        if self.config.judge == "model" and self.verdict is not None:
            m["judge_agreement"] = float(self.final_correct(self.verdict))
            m["first_speaker_won"] = float(self.verdict == first)
        m[f"question_kind/{self.question.kind}"] = 1.0
        return m

    # ----- moves and private information -------------------------------------------------------
    def sample_moves(self, player: str) -> list[str]:
        """Legal messages built from public text only (the question's words, the answers given)."""
        if self.is_over() or player != self.to_move():
            return []
        if player == JUDGE:
            return ["WINNER: debater_0", "WINNER: debater_1"]
        candidates = [a for d in DEBATERS for a, _ in self.answers[d][-1:]]
        if player in self.assigned:
            candidates.insert(0, self.assigned[player])
        candidates += re.findall(r"-?\d+|[A-Z][a-z]+", self.question.question)[-3:]
        if self.question.kind == "true_false":
            candidates += ["true", "false"]
        moves = [f"ANSWER: {a} CONFIDENCE: {c} REASON: I checked it." for a in dict.fromkeys(candidates) for c in (40, 90)]
        return moves[:8]

    def private_info(self) -> dict[str, list[str]]:
        info = {d: [self._assigned_line(d)] for d in self.assigned}
        if self.config.judge_sees_gold:
            info[JUDGE] = [self._reference_line()]
        return info

    def _assigned_line(self, debater: str) -> str:
        return f"[private] Your assigned answer: {self.assigned[debater]}"

    def _reference_line(self) -> str:
        return f"[private] Reference answer: {self.question.answer}"

    # ----- observation -------------------------------------------------------------------------
    def _scoring_text(self, player: str) -> str:
        c = self.config
        if player == JUDGE:
            if c.variant == "cooperative":
                return f"Scoring: you get {c.correct_reward:g} if the debater you pick holds the right answer."
            return (
                f"Scoring: the debater you pick wins (+{c.win_reward:g}), the other loses (-{c.win_reward:g}); "
                f"you get {c.correct_reward:g} if the winner's final answer is right."
            )
        if c.variant == "cooperative":
            return f"Scoring: {c.correct_reward:g} if your final answer is right; {c.team_bonus:g} more each if both are right."
        who = "a judge who knows the answer" if c.judge == "oracle" else "the judge"
        return (
            f"Scoring: you must defend your assigned answer; {who} declares the winner "
            f"(+{c.win_reward:g} to the winner, -{c.win_reward:g} to the loser, 0 each for a draw)."
        )

    def _sealed(self, viewer: str, author: str) -> bool:
        """A first opening stays sealed to the other debater until both have opened."""
        return self.config.blind_openings and viewer in DEBATERS and author != viewer and not self.answers[viewer] and len(self.messages) < 2

    def _answer_line(self, viewer: str, debater: str) -> str:
        if not self.answers[debater]:
            return "none"
        if self._sealed(viewer, debater):
            return "sealed"
        a, conf = self.answers[debater][-1]
        return f"{clean_text(a, self.config.max_answer_chars)} (confidence {conf})"

    def observe_text(self, player: str) -> str:
        c = self.config
        lines = [f"Role: {player}"]
        if player == JUDGE:
            lines.append("You judge a debate between debater_0 and debater_1.")
        else:
            lines.append(f"You debate with {self._other(player)}; you may keep or change your answer each turn.")
        lines.append(f"Question: {self.question.question}")
        if player in self.assigned:
            lines.append(self._assigned_line(player))
        if player == JUDGE and c.judge_sees_gold:
            lines.append(self._reference_line())
        lines.append(self._scoring_text(player))
        lines.append(f"Order: {self.order[0]} first; an opening, then {c.rounds} round(s).")
        if self.messages:
            lines.append("Transcript:")
            for i, (who, phase, answer, conf, reason) in enumerate(self.messages, 1):
                if self._sealed(player, who):
                    lines.append(f"{i}. {who}, {phase}: (sealed until both have opened)")
                else:
                    lines.append(f"{i}. {who}, {phase}: ANSWER: {answer} CONFIDENCE: {conf}" + (f" REASON: {reason}" if reason else ""))
        else:
            lines.append("Transcript: (empty)")
        if player == JUDGE:
            for d in DEBATERS:
                lines.append(f"Final answer of {d}: {self._answer_line(player, d)}")
        else:
            lines.append(f"Your answer: {self._answer_line(player, player)}")
            lines.append(f"Other answer: {self._answer_line(player, self._other(player))}")
        lines.append(f"Phase: {self.phase()}")
        if self.is_over():
            lines.append(f"Status: game over: {self._outcome_text()}")
        elif player == self.to_move():
            lines.append("Status: your turn")
            if player == JUDGE:
                lines.append("Reply with WINNER: debater_0 or WINNER: debater_1, then your reasons.")
            else:
                lines.append("Reply with ANSWER: <answer> CONFIDENCE: <0-100> REASON: <why>.")
        else:
            lines.append(f"Status: waiting for {self.to_move()}")
        return "\n".join(lines)

    def _outcome_text(self) -> str:
        if self.forfeited_by is not None:
            return f"{self.forfeited_by} forfeited after repeated illegal moves"
        if self.verdict is not None:
            return f"the judge picked {self.verdict}"
        return "the debate is over"


def debate_game(env) -> DebateGame | None:
    """The :class:`DebateGame` under ``env`` (wrappers included), or None for another game."""
    game = getattr(env, "unwrapped", env)
    return game if isinstance(game, DebateGame) else None


__all__ = [
    "DEBATERS",
    "JUDGE",
    "DebateGame",
    "Question",
    "QuestionBank",
    "clean_text",
    "debate_game",
    "generate_question",
    "load_questions",
    "normalize_answer",
    "parse_message",
    "parse_verdict",
]
