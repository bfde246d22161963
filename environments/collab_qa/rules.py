"""Collaborative QA with heterogeneous tools — ``collab_qa-v0``.

Source: Eisenstein et al., "Don't lie to your friends: Learning what you know
from collaborative self-play" (2025). A small society of agents with
different search tools is rewarded as a group for a correct answer reached
with little effort; the skills this teaches (when to answer from memory, when
to search, when to trust a result, when to hedge or abstain) are meant to
transfer to one agent working alone, which is the isolated setting below.

Seats
    ``asker`` sees the question and gives the final answer; it has no tool
    unless ``asker_tool`` names one. ``helper_0`` ... ``helper_{N-1}``
    (``helpers``, default 2) each own one search tool: BM25
    (:mod:`arena.environments.collab_qa.retrieval`) over one corpus, by default the data's corpora in
    name order (the generated world: ``compounds``, ``people``);
    ``helper_tools`` chooses. Helpers see only what the asker sends them.

Isolated setting (the same game, other config)
    ``helpers=0, asker_tool="people"``: one agent alone with one search tool
    answers the question (SEARCH, then ANSWER / ANSWER (unsure) / ABSTAIN).
    Rewards, limits, observations and metrics are those of the collaborative
    game. ``helpers=0`` without a tool is closed-book answering.

Anonymity
    The asker sees helpers as ``helper 1`` ... ``helper N`` in a fresh random
    order each episode (drawn from the episode rng), and is not told which
    corpus is whose, so it must judge helpers by what they say.
    ``reveal_helpers=True`` (the paper's de-anonymised ablation) shows each
    label's corpus.

Moves (free text; the move is the first line that starts with a keyword,
case-insensitive)
    asker   ``ASK helper <n>: <message>``     message helper n (free; no cost)
            ``ANSWER: <answer>``              final answer, confident
            ``ANSWER (unsure): <answer>``     final answer, hedged ((hedged),
                                              (not sure), (uncertain) also read)
            ``ABSTAIN``                       no answer
            ``SEARCH: <query>``               only with ``asker_tool``
    helper  ``SEARCH: <query>``               call its tool; the results become
                                              its own next observation, seen by
                                              no one else; it moves again
            ``REPLY: <message>``              to the asker; free text, may be
                                              hedged ("I'm not sure, but ...")

    ASK and REPLY messages run to the end of the action (shown on one line,
    at most ``max_message_chars``); SEARCH queries and answers run to the end
    of their line. After an ASK the helper moves until it REPLYs; then the
    asker moves again. Anything else (no keyword, an empty message, a move
    the seat does not have, a helper number out of range, a search beyond
    ``max_searches_per_turn`` in one turn) is an illegal move: the shared rule
    re-asks up to ``max_illegal_retries`` times, then the offender forfeits;
    the game ends and is scored as an abstention, plus ``forfeit_penalty`` for
    the offender.

Turn limits
    ``max_turns`` legal moves in all (every seat's, searches included). A game
    that reaches it without a final answer ends and is scored as abstaining.
    A seat may SEARCH at most ``max_searches_per_turn`` times in a row before
    it must do something else.

What each player sees (``observe_text``; stable lines bots parse)
    asker:  ``Role: asker``, ``[private] Question: ...``, the helpers (anonymous
            or revealed), the scoring rule, ``Conversation:`` with lines
            ``  you to helper <n>: "..."`` and ``  helper <n>: "..."``, its own
            searches if it has a tool, ``Turns left: t of T``, ``Status: ...``
            and the moves it may make.
    helper: ``Role: helper``, ``[private] Your search tool: <corpus> ...``, the
            scoring rule, ``Conversation with the asker:`` with lines
            ``  asker: "..."`` and ``  you: "..."``, its searches (see below),
            ``Searches left this turn: s of S``, ``Turns left``, ``Status``.
    Searches are shown only to their caller, every line marked ``[private]``::

        [private] Search 2 ("where was Varo Quell born"): 3 results
        [private]   1. (people-0012) Varo Quell: Varo Quell was born in Tessin. ...

    Messages between seats are shown inside quotes on one line with square
    brackets turned into parentheses, so no message can forge a ``[private]``
    line in another seat's view. At the end every seat sees the outcome, the
    gold answer and the scores.

Questions
    From the generated world (:mod:`arena.environments.collab_qa.world`,
    ``world`` config) or, with ``data_dir``, from a data directory in the same
    JSONL format (``questions.jsonl``, ``corpora/<tool>.jsonl``). ``split``
    picks the questions (``train``, ``test``, ``ood``; None: all), ``domain``
    optionally keeps those of one corpus (for an isolated agent whose tool
    covers only that corpus); the episode rng draws one, or ``question_index`` fixes it (for sweeps over a split).
    The data set and each BM25 index are built once per process (indexes are
    also cached on disk, keyed by content).
    ``redraw_unknown=True`` (for training entries) gives a question on a fact
    marked unknown a value drawn anew each game from its attribute's values,
    and every page about its entity that a search returns states that value:
    each such game is a question never met before, so playing unknown facts
    cannot teach them. Evaluation leaves it off.

Rewards (shared: every seat gets the same return)
    Answer quality q: token F1 with the best gold answer (``metric="f1"``,
    SQuAD normalisation: lower case, no punctuation or articles), or exact
    match (``metric="em"``). The answer score is
    ``q * right + (1 - q) * wrong`` with (right, wrong) = (``confident_right``,
    ``confident_wrong``) = (1, 0) for a confident answer (plain F1, as in the
    paper) and (``hedged_right``, ``hedged_wrong``) = (0.6, 0.15) for a hedged
    one; abstaining (and running out of turns, and forfeit) scores
    ``abstain_score`` = 0.2. The paper leaves these open; with the defaults
    and p the chance of being right, abstaining is best for p < 0.11,
    hedging for 0.11 < p < 0.27, a confident answer above. Each tool call
    costs the group ``search_cost`` (0.05), charged when it is made.
    Return = answer score - search_cost x searches (the forfeit penalty on
    top for an offender); ``group_return`` is the mean of the returns.
    ``reward_components``: ``answer_score``, ``search_cost`` (negative),
    which sum to the shared return, and ``f1``, ``em`` (the raw quality).

Metrics
    ``f1``, ``em``, ``correct`` (= em), ``answer_score``, ``searches``,
    ``searches/<seat>``, ``asks``, ``turns``, ``answered`` (confident),
    ``hedged``, ``abstained`` (abstain, out of turns or forfeit),
    ``timed_out``, and ``known`` (1 if a generated-world question is about a
    fact marked known, 0 if not; absent for other data).

Version history
    v0: first version: asker + N helpers with BM25 tools, anonymity switch,
        confident/hedged/abstain scoring, isolated setting.
"""

from __future__ import annotations

import collections
import functools
import re
import string
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from gymnasium import spaces
from pydantic import Field, model_validator

from arena.environments.collab_qa.retrieval import BM25Index, cached_index
from arena.environments.collab_qa.world import QADataset, QuestionRecord, WorldConfig, cached_world, draw_value, load_dataset, value_pools
from arena.game import FreeText, GameConfig, IllegalMove, TextGame, clean_text

PRIVATE = "[private]"
_KEYWORD = re.compile(r"^[ \t>*_`#-]*(ASK|ANSWER|ABSTAIN|SEARCH|REPLY)\b", re.IGNORECASE | re.MULTILINE)
_ASK = re.compile(r"\s*helper\s*#?\s*([0-9]+)\s*[:,.\-]?(.*)", re.IGNORECASE | re.DOTALL)
_PUNCTUATION = frozenset(string.punctuation)
_HEDGE = re.compile(r"\s*\(\s*(unsure|hedged|not sure|uncertain)\s*\)", re.IGNORECASE)


# ----- scoring -------------------------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def best_score(prediction: str, answers: list[str]) -> tuple[float, float]:
    """(F1, exact match), each the best over the gold answers."""
    return max(token_f1(prediction, a) for a in answers), max(exact_match(prediction, a) for a in answers)


# ----- data and indexes, once per process ----------------------------------------------------------------
class QABank:
    """A data set with its questions by split and a lazily built BM25 index per corpus."""

    def __init__(self, ds: QADataset):
        self.ds = ds
        self._splits: dict[tuple[str | None, str | None], list[QuestionRecord]] = {}
        self._indexes: dict[str, BM25Index] = {}

    def questions(self, split: str | None, domain: str | None = None) -> list[QuestionRecord]:
        if (split, domain) not in self._splits:
            self._splits[(split, domain)] = [q for q in self.ds.split(split) if domain is None or q.domain == domain]
        return self._splits[(split, domain)]

    @functools.cached_property
    def titles(self) -> dict[str, str]:
        """Each document's title by id, over all corpora."""
        return {d.id: d.title for docs in self.ds.corpora.values() for d in docs}

    @functools.cached_property
    def pools(self) -> dict[str, tuple[str, ...]]:
        """What each attribute's value may be (:func:`~arena.environments.collab_qa.world.value_pools`)."""
        return value_pools(self.ds)

    def index(self, tool: str) -> BM25Index:
        if tool not in self._indexes:
            docs = self.ds.corpora[tool]
            self._indexes[tool] = cached_index([d.id for d in docs], [d.display() for d in docs])
        return self._indexes[tool]


@functools.lru_cache(maxsize=16)
def _bank(world: WorldConfig, data_dir: str | None, stamp: tuple) -> QABank:
    return QABank(load_dataset(data_dir) if data_dir else cached_world(world))


def load_bank(world: WorldConfig, data_dir: str | None) -> QABank:
    """The bank for a config, built once per process (a data directory is re-read when its files change)."""
    stamp: tuple = ()
    if data_dir:
        root = Path(data_dir)
        stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*.jsonl")))
    return _bank(world, data_dir, stamp)


# ----- the game --------------------------------------------------------------------------------------------
class CollabQAGame(TextGame):
    """An asker and helpers with search tools answer a question together; see the module docstring."""

    #: the default seats; an instance's seats follow its ``helpers`` setting
    players: ClassVar[tuple[str, ...]] = ("asker", "helper_0", "helper_1")
    metadata: ClassVar[dict] = {"name": "collab_qa_v0", "render_modes": ["human", "ansi"], "is_parallelizable": False}
    description: ClassVar[str] = "An asker and helpers with different search tools answer a question together; shared reward F1 minus search cost."

    class Config(GameConfig):
        helpers: int = Field(2, ge=0, le=8, description="number of helpers; 0 with asker_tool is the isolated setting")
        helper_tools: tuple[str, ...] | None = Field(None, description="corpus of each helper's tool, in seat order; None = the data's corpora in order")
        asker_tool: str | None = Field(None, description="corpus of the asker's own tool (the isolated setting); None = no tool")
        reveal_helpers: bool = Field(False, description="show the asker each helper's corpus (the de-anonymised ablation)")
        world: WorldConfig = Field(default_factory=WorldConfig, description="the generated world (when data_dir is None)")
        data_dir: str | None = Field(None, description="a data directory (questions.jsonl, corpora/<tool>.jsonl) instead of the world")
        split: str | None = Field("train", description="which questions: train / test / ood (None: all)")
        domain: str | None = Field(None, description="only questions whose domain is this (e.g. the isolated agent's corpus)")
        question_index: int | None = Field(None, ge=0, description="play this question of the split instead of a random one")
        max_turns: int = Field(12, ge=1, le=1000, description="legal moves of all seats before the game ends unanswered")
        max_searches_per_turn: int = Field(2, ge=1, le=100, description="searches a seat may make in a row")
        results_per_search: int = Field(3, ge=1, le=20, description="documents returned per search")
        max_result_chars: int = Field(300, ge=20, le=10_000, description="a result's text is cut to this length")
        max_message_chars: int = Field(300, ge=20, le=10_000, description="a message is cut to this length when shown")
        search_cost: float = Field(0.05, ge=0, description="cost to the group of each tool call (open in the paper)")
        metric: Literal["f1", "em"] = Field("f1", description="answer quality: token F1 or exact match")
        confident_right: float = Field(1.0, description="score of a confident answer with quality 1")
        confident_wrong: float = Field(0.0, description="score of a confident answer with quality 0")
        hedged_right: float = Field(0.6, description="score of a hedged answer with quality 1")
        hedged_wrong: float = Field(0.15, description="score of a hedged answer with quality 0")
        abstain_score: float = Field(0.2, description="score of abstaining, running out of turns or forfeiting")
        redraw_unknown: bool = Field(
            False,
            description="give a question on an unknown fact a value drawn anew each game, stated so on the pages about its "
            "entity that searches return: a stream of questions never met before, which playing them cannot teach "
            "(for training entries; the generated world only)",
        )

        @model_validator(mode="after")
        def _check(self) -> CollabQAGame.Config:
            if self.helper_tools is not None and len(self.helper_tools) != self.helpers:
                raise ValueError(f"helper_tools names {len(self.helper_tools)} tools for {self.helpers} helpers")
            if self.redraw_unknown and self.data_dir is not None:
                raise ValueError("redraw_unknown needs the generated world (data_dir is set): a data directory's values cannot be drawn anew")
            return self

    config: Config

    def __init__(self, config: GameConfig | None = None, render_mode: str | None = None, **kwargs: Any):
        super().__init__(config, render_mode, **kwargs)
        c = self.config
        self.bank = load_bank(c.world, c.data_dir)
        corpora = list(self.bank.ds.corpora)
        if c.helper_tools is None:
            if c.helpers > len(corpora):
                raise ValueError(f"{c.helpers} helpers but only {len(corpora)} corpora ({corpora}): set helper_tools")
            self.tools = {f"helper_{i}": corpora[i] for i in range(c.helpers)}
        else:
            self.tools = {f"helper_{i}": t for i, t in enumerate(c.helper_tools)}
        if c.asker_tool is not None:
            self.tools = {"asker": c.asker_tool, **self.tools}
        for seat, tool in self.tools.items():
            if tool not in self.bank.ds.corpora:
                raise ValueError(f"{seat}'s tool {tool!r} is not a corpus of the data; corpora: {corpora}")
        self.pool = self.bank.questions(c.split, c.domain)
        if not self.pool:
            found = sorted(str(s) for s in self.bank.ds.splits())
            raise ValueError(
                f"no questions in split {c.split!r}"
                + (f" with domain {c.domain!r}" if c.domain else "")
                + f"; splits in the data: {found} (split=None takes all)"
            )
        if c.question_index is not None and c.question_index >= len(self.pool):
            raise ValueError(f"question_index {c.question_index} is out of range: split {c.split!r} has {len(self.pool)} questions")
        self.helper_seats = tuple(f"helper_{i}" for i in range(c.helpers))
        self.players = ("asker", *self.helper_seats)
        self.possible_agents = list(self.players)
        self.observation_spaces = {p: spaces.Dict({"text": FreeText()}) for p in self.players}
        self.action_spaces = {p: FreeText() for p in self.players}

    # ----- rules -------------------------------------------------------------------------------------------
    def setup(self, rng: np.random.Generator) -> None:
        c = self.config
        idx = c.question_index if c.question_index is not None else int(rng.integers(len(self.pool)))
        self.question = self.pool[idx]
        order = rng.permutation(c.helpers) if c.helpers else []
        #: label_of[seat] = the number the asker knows that helper by (1-based)
        self.label_of = {self.helper_seats[int(h)]: k + 1 for k, h in enumerate(order)}
        self.seat_of = {k: seat for seat, k in self.label_of.items()}
        #: (the fact's value in the data, this game's value) when ``redraw_unknown`` drew it anew
        self.redrawn: tuple[str, str] | None = None
        if c.redraw_unknown and self.question.meta.get("known") is False:
            value = draw_value(self.bank.pools, self.question.meta["attribute"], rng)
            self.redrawn = (self.question.answers[0], value)
            self.question = self.question.model_copy(update={"answers": [value]})
        self.messages: list[tuple[str, str, str]] = []  # (sender, recipient, cleaned text)
        self.searches: dict[str, list[tuple[str, list[tuple[str, str, float]]]]] = {p: [] for p in self.players}
        self.streak: dict[str, int] = {p: 0 for p in self.players}  # searches in a row
        self.turns_used = 0
        self.pending: str | None = None  # the helper that owes the asker a reply
        self.outcome: str | None = None  # answered | hedged | abstained | out_of_turns | forfeit
        self.answer: str | None = None

    def to_move(self) -> str:
        return self.pending or "asker"

    def is_over(self) -> bool:
        return self.outcome is not None

    def apply(self, player: str, action: str) -> None:
        m = _KEYWORD.search(action)
        if m is None:
            raise IllegalMove(f"no move found: {self._moves_hint(player)}")
        move, rest = m.group(1).upper(), action[m.end() :]
        line = rest.split("\n", 1)[0]
        if move == "SEARCH":
            self._search(player, _strip_colon(line))
        elif player == "asker":
            self._asker_move(move, rest, line)
        else:
            self._helper_move(player, move, rest)
        if move != "SEARCH":
            self.streak[player] = 0
        self.turns_used += 1
        if self.outcome is None and self.turns_used >= self.config.max_turns:
            self.outcome = "out_of_turns"
            self.pending = None

    def _search(self, player: str, query: str) -> None:
        c = self.config
        tool = self.tools.get(player)
        if tool is None:
            raise IllegalMove("you have no search tool" + ("; ASK a helper" if player == "asker" and c.helpers else ""))
        if not query:
            raise IllegalMove("SEARCH needs a query, e.g. SEARCH: where was Varo Quell born")
        if self.streak[player] >= c.max_searches_per_turn:
            raise IllegalMove(
                f"no searches left this turn ({c.max_searches_per_turn} of {c.max_searches_per_turn} used): "
                + ("REPLY to the asker" if player != "asker" else "ANSWER, ANSWER (unsure) or ABSTAIN")
            )
        results = self.bank.index(tool).search(query, c.results_per_search)
        if self.redrawn is not None:
            results = [(doc, self._restate(doc, text), score) for doc, text, score in results]
        self.searches[player].append((clean_text(query, 100), results))
        self.streak[player] += 1
        self.record_tool_call(
            player, f"search:{tool}", {"query": query}, [{"doc": doc, "text": text, "score": round(float(score), 4)} for doc, text, score in results]
        )

    def _restate(self, doc: str, text: str) -> str:
        """``text`` of document ``doc`` with the question's fact stated at this game's value, if the document
        is about the question's entity (an entity's own attributes never share a value)."""
        old, new = self.redrawn
        if self.bank.titles.get(doc) != self.question.meta["entity"]:
            return text
        return re.sub(rf"\b{re.escape(old)}\b", new, text)

    def _asker_move(self, move: str, rest: str, line: str) -> None:
        c = self.config
        if move == "ASK":
            if not c.helpers:
                raise IllegalMove("there are no helpers in this game")
            m = _ASK.match(rest)
            if m is None:
                raise IllegalMove(f"write ASK helper <n>: <message>, with n from 1 to {c.helpers}")
            k = int(m.group(1)) if len(m.group(1)) < 6 else 0
            if k not in self.seat_of:
                raise IllegalMove(f"there is no helper {m.group(1)}: helpers are numbered 1 to {c.helpers}")
            text = clean_text(m.group(2), c.max_message_chars)
            if not text:
                raise IllegalMove("ASK needs a message for the helper")
            self.messages.append(("asker", self.seat_of[k], text))
            self.pending = self.seat_of[k]
        elif move == "ANSWER":
            hedge = _HEDGE.match(line)
            answer = _strip_colon(line[hedge.end() :] if hedge else line)
            if not answer:
                raise IllegalMove("ANSWER needs an answer, e.g. ANSWER: Tessin")
            self.answer = clean_text(answer, c.max_message_chars)
            self.outcome = "hedged" if hedge else "answered"
        elif move == "ABSTAIN":
            self.outcome = "abstained"
        else:
            raise IllegalMove(f"the asker cannot {move}: {self._moves_hint('asker')}")

    def _helper_move(self, player: str, move: str, rest: str) -> None:
        if move != "REPLY":
            raise IllegalMove(f"a helper cannot {move}: {self._moves_hint(player)}")
        text = clean_text(_strip_colon(rest), self.config.max_message_chars)
        if not text:
            raise IllegalMove("REPLY needs a message for the asker")
        self.messages.append((player, "asker", text))
        self.pending = None

    def forfeit(self, player: str, reason: str) -> None:
        super().forfeit(player, reason)
        self.outcome, self.pending = "forfeit", None

    # ----- scores --------------------------------------------------------------------------------------------
    def quality(self) -> tuple[float, float]:
        """(F1, exact match) of the final answer; (0, 0) without one."""
        if self.outcome in ("answered", "hedged") and self.answer is not None:
            return best_score(self.answer, self.question.answers)
        return 0.0, 0.0

    def answer_score(self) -> float:
        if self.outcome is None:
            return 0.0
        c = self.config
        f1, em = self.quality()
        q = f1 if c.metric == "f1" else em
        if self.outcome == "answered":
            return q * c.confident_right + (1 - q) * c.confident_wrong
        if self.outcome == "hedged":
            return q * c.hedged_right + (1 - q) * c.hedged_wrong
        return c.abstain_score

    def total_searches(self) -> int:
        return sum(len(s) for s in self.searches.values())

    def returns(self) -> dict[str, float]:
        shared = self.answer_score() - self.config.search_cost * self.total_searches()
        return {p: shared for p in self.players}

    def group_return(self) -> float:
        """The mean of the returns: the shared reward, less the forfeit penalty spread over the seats."""
        shared = self.answer_score() - self.config.search_cost * self.total_searches()
        penalty = self.config.forfeit_penalty if self._forfeited is not None else 0.0
        return shared + penalty / len(self.players)

    def reward_components(self) -> dict[str, float]:
        f1, em = self.quality()
        return {
            "answer_score": self.answer_score(),
            "search_cost": -self.config.search_cost * self.total_searches(),
            "f1": f1,
            "em": em,
        }

    def outcome_label(self) -> str | None:
        return self.outcome

    def metrics(self) -> dict[str, float]:
        f1, em = self.quality()
        out = {
            "f1": f1,
            "em": em,
            "correct": em,
            "answer_score": self.answer_score(),
            "searches": float(self.total_searches()),
            "asks": float(sum(1 for s, _, _ in self.messages if s == "asker")),
            "turns": float(self.turns_used),
            "answered": float(self.outcome == "answered"),
            "hedged": float(self.outcome == "hedged"),
            "abstained": float(self.outcome in ("abstained", "out_of_turns", "forfeit")),
            "timed_out": float(self.outcome == "out_of_turns"),
        }
        for seat in self.tools:
            out[f"searches/{seat}"] = float(len(self.searches[seat]))
        known = self.question.meta.get("known")
        if isinstance(known, bool):
            out["known"] = float(known)
        return out

    # ----- optional rules ------------------------------------------------------------------------------------
    def sample_moves(self, player: str) -> list[str]:
        if self.outcome is not None or player != self.to_move():
            return []
        can_search = player in self.tools and self.streak[player] < self.config.max_searches_per_turn
        if player == "asker":
            q = self.question.question
            moves = [f"ASK helper {k}: {q}" for k in sorted(self.seat_of)]
            if can_search:
                moves.append(f"SEARCH: {q}")
            replies = [t for s, _, t in self.messages if s != "asker"]
            guess = replies[-1] if replies else "I do not know"
            return moves + [f"ANSWER: {guess}", f"ANSWER (unsure): {guess}", "ABSTAIN"]
        asked = [t for _, r, t in self.messages if r == player]
        moves = [f"SEARCH: {asked[-1]}"] if can_search and asked else []
        moves.append("REPLY: I don't know.")
        if self.searches[player] and self.searches[player][-1][1]:
            top = self.searches[player][-1][1][0][1]
            moves.append("REPLY: I'm not sure, but maybe " + " ".join(top.split()[:8]))
        return moves

    def private_info(self) -> dict[str, list[str]]:
        """Lines only their owner sees: the asker's question, each tool line and search result.
        A line two seats both see (two helpers with the same tool) is left out."""
        info: dict[str, list[str]] = {"asker": [self._question_line()]}
        for seat in self.tools:
            info.setdefault(seat, []).append(self._tool_line(seat))
            for n, (query, results) in enumerate(self.searches[seat], 1):
                info[seat] += self._search_lines(n, query, results)
        owners = collections.Counter(f for frags in info.values() for f in set(frags))
        return {p: [f for f in frags if owners[f] == 1] for p, frags in info.items()}

    # ----- observations --------------------------------------------------------------------------------------
    def _question_line(self) -> str:
        return f"{PRIVATE} Question: {clean_text(self.question.question, 1000)}"

    def _tool_line(self, seat: str) -> str:
        tool = self.tools[seat]
        n = len(self.bank.ds.corpora[tool])
        return f"{PRIVATE} Your search tool: the {tool} corpus ({n} documents): {self.bank.ds.describe(tool)}"

    def _search_lines(self, n: int, query: str, results: list[tuple[str, str, float]]) -> list[str]:
        # the query holds no double quote (cleaned) and the count ends the line, so one seat's
        # header is never a substring of another seat's different header
        count = f"{len(results)} result{'s' if len(results) != 1 else ''}" if results else "no results"
        lines = [f'{PRIVATE} Search {n} ("{query}"): {count}']
        for r, (doc_id, text, _) in enumerate(results, 1):
            lines.append(f"{PRIVATE}   {r}. ({doc_id}) {clean_text(text, self.config.max_result_chars)}")
        return lines

    def _scoring_line(self) -> str:
        c = self.config
        quality = "its F1 with the gold answer" if c.metric == "f1" else "1 for an exact match"
        return (
            ("Scoring (shared by everyone)" if c.helpers else "Scoring") + f": a confident answer scores {quality} "
            f"({c.confident_right:g} if right, {c.confident_wrong:g} if wrong); a hedged answer {c.hedged_right:g} "
            f"if right, {c.hedged_wrong:g} if wrong; abstaining {c.abstain_score:g}; "
            f"every search{' by anyone' if c.helpers else ''} costs {c.search_cost:g}."
        )

    def _moves_hint(self, player: str) -> str:
        if player == "asker":
            moves = []
            if self.config.helpers:
                moves.append(f"ASK helper <n>: <message> (n from 1 to {self.config.helpers})")
            if "asker" in self.tools:
                moves.append("SEARCH: <query>")
            moves += ["ANSWER: <answer>", "ANSWER (unsure): <answer>", "ABSTAIN"]
            return "write one of " + " | ".join(moves)
        return "write SEARCH: <query> or REPLY: <message to the asker>"

    def observe_text(self, player: str) -> str:
        c = self.config
        lines = [f"Role: {'asker' if player == 'asker' else 'helper'}"]
        if player == "asker":
            lines += self._asker_head()
        else:
            lines += [
                "You help an asker answer a question; the group is rewarded together for a correct answer "
                "reached with few searches. You see only what the asker sends you.",
                self._tool_line(player),
            ]
        lines.append(self._scoring_line())
        lines += self._conversation(player)
        if player in self.tools:
            for n, (query, results) in enumerate(self.searches[player], 1):
                lines += self._search_lines(n, query, results)
            lines.append(f"Searches left this turn: {c.max_searches_per_turn - self.streak[player]} of {c.max_searches_per_turn}")
        lines.append(f"Turns left: {c.max_turns - self.turns_used} of {c.max_turns}")
        if self.outcome is not None:
            lines.append(f"Status: game over: {self._outcome_text()}")
        elif player == self.to_move():
            lines.append("Status: your turn" + ("" if player == "asker" else ": the asker is waiting for your reply"))
            lines.append("Moves: " + self._moves_hint(player))
        else:
            lines.append("Status: waiting for " + ("the asker" if player != "asker" else f"helper {self.label_of[self.to_move()]}"))
        return "\n".join(lines)

    def _asker_head(self) -> list[str]:
        c = self.config
        n = c.helpers
        together = f" with the help of {n} helper{'s' if n > 1 else ''}; the group is rewarded together" if n else "; you are rewarded"
        head = [
            f"You must answer the question{together} for a correct answer reached with few searches.",
            self._question_line(),
        ]
        if "asker" in self.tools:
            head.append(self._tool_line("asker"))
        if n and c.reveal_helpers:
            for k in sorted(self.seat_of):
                tool = self.tools[self.seat_of[k]]
                head.append(f"Helper {k} searches the {tool} corpus: {self.bank.ds.describe(tool)}.")
        elif n:
            labels = ", ".join(f"helper {k}" for k in sorted(self.seat_of))
            head.append(f"Helpers: {labels}. Each can search its own corpus; you are not told which corpus is whose.")
        return head

    def _conversation(self, player: str) -> list[str]:
        if not self.config.helpers:
            return []
        out = ["Conversation:" if player == "asker" else "Conversation with the asker:"]
        for sender, recipient, text in self.messages:
            if player == "asker":
                who = f"you to helper {self.label_of[recipient]}" if sender == "asker" else f"helper {self.label_of[sender]}"
            elif player in (sender, recipient):
                who = "asker" if sender == "asker" else "you"
            else:
                continue
            out.append(f'  {who}: "{text}"')
        if len(out) == 1:
            out.append("  (none)")
        return out

    def _outcome_text(self) -> str:
        f1, em = self.quality()
        if self.outcome == "answered":
            what = f'the asker answered "{self.answer}"'
        elif self.outcome == "hedged":
            what = f'the asker answered "{self.answer}" (unsure)'
        elif self.outcome == "abstained":
            what = "the asker abstained"
        elif self.outcome == "out_of_turns":
            what = "out of turns (scored as abstaining)"
        else:
            what = "a player forfeited after repeated illegal moves (scored as abstaining)"
        gold = " | ".join(clean_text(a, 200) for a in self.question.answers)
        reward = self.answer_score() - self.config.search_cost * self.total_searches()
        return f"{what}. Gold answer: {gold}. F1 {f1:.2f}, exact match {em:g}. Searches: {self.total_searches()}. Group reward: {reward:.2f}."


def _strip_colon(text: str) -> str:
    """``: text`` or ``:** text`` (markdown bold around the keyword) -> ``text``."""
    return re.sub(r"^[\s:*-]*", "", text).strip()
