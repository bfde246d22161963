"""Scripted bots for ``collab_qa-v0``: baselines, demonstrations and fixed partners.

Every bot reads only ``view.observation`` (the game's stable lines:
``Role:``, ``[private] Question:``, the ``Conversation`` lines, the
``[private] Search`` blocks, ``Searches left this turn:``, ``Moves:``) and
plays any seat: asker or helper, in the collaborative or the isolated setting.

Reading documents. For the generated world, bots find an answer in a search
result with the world's own templates (:func:`~arena.environments.collab_qa.world.parse_question`
and :func:`~arena.environments.collab_qa.world.extract_answer`): the highest-ranked
result that states the asked attribute of the asked entity gives the answer
span. For other data (questions in no known template) a bot that searched
replies with the top result's first sentence, hedged.

- ``always_search``: a helper searches once with the asker's message, then
  replies with the answer span, or "I don't know." The asker asks helper 1,
  then each next helper while the replies are "I don't know", and answers
  what it is told (hedged if the reply was hedged); with nothing, it
  abstains. With a tool of its own (isolated setting) the asker searches
  first and answers from the result.
- ``never_search``: never calls a tool. A helper replies "I don't know."; the
  asker asks each helper once and answers what it is told, else abstains.
- ``oracle``: reads the gold answers of the default generated world
  (``WorldConfig()``, all splits). The asker answers at once, without asking
  or searching; a helper replies with the gold answer to a question it is
  sent. For any other world or data it knows nothing and abstains (asker)
  or replies "I don't know." (helper).
- ``memory_first``: knows exactly the facts of the default world marked
  ``known`` (what the tiny model is pre-trained on). It answers those from
  memory, without searching; for the rest it plays ``always_search``. The
  behaviour the paper's training aims for: search only for what you do not know.

:class:`FromMemory` (not in ``BOTS``: it is built with a memory) is a teacher
for imitation: given answers it "remembers" (a model's own closed-book
answers) and, per question, the probability of answering from memory, it
answers from memory (hedged with probability ``hedge``) or else plays
``always_search``. A fixed probability for every question is the prompting
analogue (decisions blind to what is known); 1 where the remembered answer is
right and 0 elsewhere is action supervision (search exactly when unknown).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from arena.agents.base import PlayerView, ScriptedPolicy
from arena.environments.collab_qa.world import FactRecord, cached_world, extract_answer, fact_table, parse_question

IDK = "I don't know."
HEDGE_PREFIX = "I'm not sure, but "

_QUESTION = re.compile(r"^\[private\] Question: (.*)$", re.M)
_ROLE = re.compile(r"^Role: (asker|helper)\s*$", re.M)
_MSG = re.compile(r'^  (you to helper ([0-9]+)|helper ([0-9]+)|asker|you): "(.*)"$', re.M)
_SEARCH = re.compile(r'^\[private\] Search ([0-9]+) \("(.*)"\): ', re.M)
_RESULT = re.compile(r"^\[private\]   ([0-9]+)\. \(([^)]*)\) (.*)$", re.M)
_LEFT = re.compile(r"^Searches left this turn: ([0-9]+) of ([0-9]+)", re.M)
_HELPERS = re.compile(r"ASK helper <n>: <message> \(n from 1 to ([0-9]+)\)")


@dataclass
class QAView:
    """What a bot reads from an observation."""

    role: str
    question: str | None = None
    #: (who, helper number or 0, text): who is "asker", "you", or "helper" (a reply to the asker)
    messages: list[tuple[str, int, str]] = field(default_factory=list)
    #: per search: (query, [(doc_id, text), ...])
    searches: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    has_tool: bool = False
    searched_this_turn: bool = False
    can_search: bool = False
    helpers: int = 0


def read_view(obs: str) -> QAView:
    """Parse an observation of collab_qa-v0 into a :class:`QAView`."""
    m = _ROLE.search(obs)
    v = QAView(role=m.group(1) if m else "asker")
    q = _QUESTION.search(obs)
    v.question = q.group(1) if q else None
    for who, to_k, from_k, text in (mm.groups() for mm in _MSG.finditer(obs)):
        if who.startswith("you to helper"):
            v.messages.append(("you", int(to_k), text))
        elif who.startswith("helper"):
            v.messages.append(("helper", int(from_k), text))
        else:
            v.messages.append((who, 0, text))
    lines = obs.splitlines()
    for line in lines:
        s = _SEARCH.match(line)
        if s:
            v.searches.append((s.group(2), []))
            continue
        r = _RESULT.match(line)
        if r and v.searches:
            v.searches[-1][1].append((r.group(2), r.group(3)))
    left = _LEFT.search(obs)
    if left:
        v.has_tool = True
        v.searched_this_turn = int(left.group(1)) < int(left.group(2))
        v.can_search = int(left.group(1)) > 0
    h = _HELPERS.search(obs)
    v.helpers = int(h.group(1)) if h else 0
    return v


def find_answer(question: str, results: list[tuple[str, str]]) -> tuple[str, bool] | None:
    """(answer, hedged) read from search results for ``question``, or None.

    A generated-world question: the first result stating the asked fact gives
    the answer, confidently. Any other question: the top result's first
    sentence, hedged."""
    if not results:
        return None
    parsed = parse_question(question)
    if parsed is None:
        first = re.split(r"(?<=[.!?])\s", results[0][1], maxsplit=1)[0]
        return first, True
    entity, attribute = parsed
    for _, text in results:
        value = extract_answer(text, entity, attribute)
        if value is not None:
            return value, False
    return None


def _reply_to_answer(text: str) -> tuple[str, bool] | None:
    """A helper's reply as (answer, hedged); None for "I don't know"."""
    t = text.strip()
    if not t or re.match(r"(?i)^i (do not|don't|dont) know", t):
        return None
    m = re.match(r"(?i)^i'?m not sure,? but (?:maybe |it may be )?(.*)$", t)
    if m:
        return m.group(1).strip().rstrip(".") or t, True
    return t.rstrip("."), False


def _answer(answer: str, hedged: bool) -> str:
    return f"ANSWER (unsure): {answer}" if hedged else f"ANSWER: {answer}"


def _reply(found: tuple[str, bool] | None) -> str:
    if found is None:
        return f"REPLY: {IDK}"
    answer, hedged = found
    return f"REPLY: {HEDGE_PREFIX}{answer}" if hedged else f"REPLY: {answer}"


class _QABot(ScriptedPolicy):
    """Dispatches on the seat; subclasses write ``asker`` and ``helper``."""

    def choose(self, view: PlayerView) -> str:
        v = read_view(view.observation)
        return self.asker(v) if v.role == "asker" else self.helper(v)

    def asker(self, v: QAView) -> str:
        raise NotImplementedError

    def helper(self, v: QAView) -> str:
        raise NotImplementedError

    # shared asker step: answer the first useful reply, else ask the next helper, else abstain
    @staticmethod
    def ask_around(v: QAView) -> str:
        for who, _, text in v.messages:
            if who == "helper":
                told = _reply_to_answer(text)
                if told is not None:
                    return _answer(*told)
        asked = {k for who, k, _ in v.messages if who == "you"}
        for k in range(1, v.helpers + 1):
            if k not in asked:
                return f"ASK helper {k}: {v.question}"
        return "ABSTAIN"


class AlwaysSearch(_QABot):
    """Helpers search once, then reply with the answer span; the asker asks around. See the module docstring."""

    policy_id = "scripted/always_search"

    def asker(self, v: QAView) -> str:
        if v.has_tool and v.question:
            if not v.searches and v.can_search:
                return f"SEARCH: {v.question}"
            found = find_answer(v.question, v.searches[-1][1]) if v.searches else None
            if found is not None:
                return _answer(*found)
        return self.ask_around(v)

    def helper(self, v: QAView) -> str:
        asked = [text for who, _, text in v.messages if who == "asker"]
        if not asked:
            return f"REPLY: {IDK}"
        if v.has_tool and not v.searched_this_turn and v.can_search:
            return f"SEARCH: {asked[-1]}"
        if not v.has_tool or not v.searches:
            return f"REPLY: {IDK}"
        return _reply(find_answer(asked[-1], v.searches[-1][1]))


class NeverSearch(_QABot):
    """Never calls a tool: helpers don't know; the asker asks around, then abstains."""

    policy_id = "scripted/never_search"

    def asker(self, v: QAView) -> str:
        return self.ask_around(v)

    def helper(self, v: QAView) -> str:
        return f"REPLY: {IDK}"


def _default_facts() -> dict[tuple[str, str], FactRecord]:
    return fact_table(cached_world())


def _gold(question: str | None) -> str | None:
    """The default world's gold answer to ``question`` (any template), or None."""
    parsed = parse_question(question or "")
    fact = _default_facts().get(parsed) if parsed else None
    return fact.value if fact else None


def _known(question: str | None) -> str | None:
    """The answer if ``question`` asks a fact of the default world marked known, else None."""
    parsed = parse_question(question or "")
    fact = _default_facts().get(parsed) if parsed else None
    return fact.value if fact is not None and fact.known else None


class Oracle(_QABot):
    """Knows every gold answer of the default generated world, and nothing else."""

    policy_id = "scripted/oracle"

    def asker(self, v: QAView) -> str:
        gold = _gold(v.question)
        return f"ANSWER: {gold}" if gold else "ABSTAIN"

    def helper(self, v: QAView) -> str:
        asked = [text for who, _, text in v.messages if who == "asker"]
        gold = _gold(asked[-1]) if asked else None
        return f"REPLY: {gold}" if gold else f"REPLY: {IDK}"


class MemoryFirst(AlwaysSearch):
    """Answers the default world's known facts from memory; searches like always_search for the rest."""

    policy_id = "scripted/memory_first"

    def asker(self, v: QAView) -> str:
        known = _known(v.question)
        return f"ANSWER: {known}" if known else super().asker(v)

    def helper(self, v: QAView) -> str:
        asked = [text for who, _, text in v.messages if who == "asker"]
        known = _known(asked[-1]) if asked else None
        return f"REPLY: {known}" if known else super().helper(v)


class FromMemory(AlwaysSearch):
    """Answers from ``memory`` (question -> answer) where it decides to, else plays always_search.

    The decision is drawn once per question and seat from the episode's generator:
    from memory with probability ``recall.get(question, default_recall)``; a
    memory answer is hedged with probability ``hedge``. A question without a
    remembered answer is always searched.
    """

    policy_id = "scripted/from_memory"

    def __init__(self, memory: Mapping[str, str], recall: Mapping[str, float] | None = None, *, default_recall: float = 0.0, hedge: float = 0.0):
        self.memory = dict(memory)
        self.recall = dict(recall or {})
        self.default_recall = default_recall
        self.hedge = hedge

    def choose(self, view: PlayerView) -> str:
        v = read_view(view.observation)
        if v.role == "asker":
            question, first = v.question, not v.messages and not v.searches
        else:
            asked = [text for who, _, text in v.messages if who == "asker"]
            question = asked[-1] if asked else None
            first = bool(asked) and not v.searched_this_turn  # asked, and not yet searched for this message
        answer = self.memory.get(question or "")
        if first and answer is not None and view.rng.random() < self.recall.get(question, self.default_recall):
            hedged = view.rng.random() < self.hedge
            if v.role == "asker":
                return _answer(answer, hedged)
            return _reply((answer, hedged))
        return self.asker(v) if v.role == "asker" else self.helper(v)


BOTS: dict[str, type[ScriptedPolicy]] = {
    "always_search": AlwaysSearch,
    "never_search": NeverSearch,
    "oracle": Oracle,
    "memory_first": MemoryFirst,
}
