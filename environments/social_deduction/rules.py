"""Social deduction: a crew and one secret impostor on a small ship (``social_deduction-v0``).

Source: Sarkar et al., "Training Language Models for Social Deduction with
Multi-Agent Reinforcement Learning" (2025), an Among-Us-like game. Published
setting (the defaults here): 5 players on a 3x2 grid of rooms, 5 tasks per
crew member, a kill cooldown of 20 ticks; after a reported body every living
player speaks twice, then everyone votes at once. Numbers the paper does not
fix are config fields with the defaults documented below ("open").

Seats and names
    The seats are ``crew_1`` ... ``crew_{n-1}`` and ``impostor`` (seat order),
    so a matchup can put a trained policy in the crew seats against a fixed
    impostor. Inside the game nobody is called by a seat: each episode the
    ``setup`` rng deals the colours ``red, blue, green, yellow, purple, ...``
    (the first ``num_players`` of ``COLOURS``) to the seats at random, and
    every observation speaks of colours only, always listed in ``COLOURS``
    order. A crew member therefore never learns from a name, an ordering or a
    seat who the impostor is; the impostor knows its own role.

Map
    ``grid_width`` x ``grid_height`` rooms (row-major from ``ROOM_NAMES``: the
    3x2 default is ``cafeteria weapons navigation / storage admin shields``,
    north is up). Rooms are adjacent north/south/east/west. Everybody starts
    in the first room and returns there after every meeting.

Tasks (crew)
    Each crew member gets ``tasks_per_crew`` tasks, each in a room drawn
    uniformly (with repetition) by the ``setup`` rng. A task needs
    ``task_ticks`` ``task`` moves in its room (open; default 2, so that the
    published cooldown lets the impostor strike before a fast crew is done).
    The impostor has no tasks; its ``task`` move only pretends.

Phase 1: ticks (hidden simultaneous moves)
    Every tick each living player, in seat order, submits one move; nobody
    sees another player's choice until the last one is in and the tick
    resolves (as in ``repeated_matrix-v0``). Legal moves, judged against the
    state at the start of the tick:

    - ``move <room>`` or ``move <north|south|east|west>``: to an adjacent room
      (the ``Your move`` line lists the adjacent rooms by name);
    - ``task``: work on one of your tasks in this room (impostor: pretend);
    - ``report``: report a body lying in this room;
    - ``kill <colour>`` (impostor only): a living player in this room, when the
      kill cooldown is 0;
    - ``wait``.

    Resolution, in order: the kill (the victim dies where it stood and leaves
    a body; its own move is void); the cooldown (set to ``kill_cooldown`` by a
    kill, else one lower, never below 0; it starts at
    ``initial_kill_cooldown``, open, default 10: a first kill can come before
    a quick crew is done); moves; witnesses (every other living player in the
    kill's room at the start or at the end of the tick saw it: its
    ``Witnessed`` line names the killer); task work. Each living player then
    notes who, and which bodies, are in its room (its ``Seen`` memory). Then
    the end checks below; then, if a living player reported, a meeting starts.

Phase 2: meeting (discussion, then a simultaneous vote)
    A meeting announces every body on the ship (the reported ones and any
    other). Discussion: ``discussion_rounds`` rounds (published: 2); in each,
    the living players speak once, in a fresh random order from the ``setup``
    rng. A message is free text shown to everyone on one line, quoted, with
    control characters and square brackets replaced (so talk can never forge a
    ``[private]`` line) and cut to ``max_talk_chars``; an empty message is
    illegal. Vote: every living player, in seat order and in secret, answers
    ``vote <colour>`` (any living player) or ``skip``. The option with the most
    votes wins; a tie at the top, or skip on top, ejects no one. The ballots
    and the outcome are then shown to all, with the ejected player's role
    when ``reveal_ejected_role``. Bodies are cleared, everyone returns to the
    first room and the ticks go on (the kill cooldown is not reset).

Parsing. Tick moves and votes are listed numbered; a reply that starts with
a number picks that option (``3``, ``3.``, ``3 task``: the number wins over
any text after it; a number with no option is illegal). Otherwise, a tick
move is the one word among ``move``, ``task``, ``report``, ``kill``,
``wait`` (case-insensitive; none or several is illegal) with its argument
after it; a vote is ``vote <colour>`` (its first occurrence), else the word
``skip``, else the one living player's colour the text names; anything else
is illegal. Numbers make legal play easy for a small model: any option is
one token away.

End of the game
    - crew win: the impostor is ejected, or every crew task is done (checked
      after each tick). A dead crew member's unfinished tasks stay undone, so
      once the impostor has killed someone with work left, only a vote can
      win it for the crew: the discussion matters;
    - impostor win: the living crew are no more than the impostor (one), after
      a kill or an ejection; or ``max_ticks`` ticks have passed (open; default
      60: the ship's time runs out, a crew loss). A meeting called on the last
      tick still runs; the time check follows its vote.
    - forfeit (the shared illegal-move rule: after ``max_illegal_retries``
      re-prompts one more illegal move forfeits): the game ends at once and
      the offender's team loses; the offender also gets ``forfeit_penalty``.
      One seat's forfeit decides a team game, so keep illegal moves rare (the
      warm start does) or raise ``max_illegal_retries``.

What each player sees (one line each, stable for bots)::

    Social deduction game: 5 players, one is a secret impostor. ...
    Map (north is up): cafeteria weapons navigation / storage admin shields
    You are blue, crew.                          (crew)
    [private] You are red, the impostor. Kill cooldown: 3 ticks.   (impostor)
    Alive: red, blue, yellow, purple. Dead: green (killed).
    Crew tasks done: 6 of 20.
    Meeting 1 (tick 9, called by red): dead green (found in admin). Votes: red: blue, blue: skip, .... Nobody was ejected.
    Witnessed: tick 6 in admin: red killed green.          (only if it saw a kill)
    Seen: t5 storage: red; t6 admin: red, body of green    (last ``memory_ticks`` ticks with company)
    Tick 7 of 60. You are in admin. Here: red. Bodies here: none.
    Your tasks left: admin (1 tick), navigation (2 ticks).
    Your move (write it or its number): 1 move cafeteria, 2 move storage, 3 move shields, 4 task, 5 wait

  During a meeting the tick lines are replaced by the meeting's header, the
  discussion so far (``red: "..."``) and ``Your turn to speak ...`` or
  ``Vote now, in secret (write it or its number): 1 vote red, 2 vote blue, ..., 5 skip``. A player that
  has already moved this tick sees its own pending move, never another's. At
  the end: ``Game over after tick 12: the crew won (...). The impostor was red.``
  Dead players see the public state and ``You are dead.``; they never move.

Private information (``private_info``): the impostor's line
``[private] You are <colour>, the impostor.``; no crew observation contains
it. Until the game is over a crew member learns who the impostor is only
from play: a kill it witnessed, an ejection's revealed role, or what is said
in a discussion (true or not).

Rewards (all optional shaping weights default to 0)
    return(p) = win(p) + task_weight * tasks(p) + report_weight * reports(p)
                + kill_weight * kills(p) + vote_weight * correct_votes(p)
                + listening_weight * listening(p) + speaking_weight * speaking(p)
    ``win`` is 1 for every seat of the winning team (dead crew members too), 0
    otherwise; ``tasks`` counts finished tasks, ``reports`` meetings called,
    ``kills`` kills (impostor), ``correct_votes`` crew votes for the impostor.
    ``listening`` and ``speaking`` are the model-read signals of
    :mod:`arena.belief`, computed after play when ``belief_scoring`` is on
    (the listening target: a crew member's mean probability on the true
    impostor over the discussion; the speaking reward: how much a message moved
    the other living crew members' belief toward the true impostor, negated
    for the impostor). ``reward_components`` gives each raw term as
    ``<term>/<seat>`` (``win/crew_1``, ``tasks/crew_1``, ``kills/impostor``,
    ...), so the return is the weighted sum of the components. The group
    return is the base default: the mean of all seats' returns.

Belief scoring (``belief_scoring=True``; the listening target and speaking reward of Sarkar et al.)
    The game records, at the start of every meeting and after every message,
    each living crew member's observation text, and returns the meetings as
    ``discussions()``. After play (``TextGame.after_play``, called by the
    episode runner with the seated policies; ``belief_scoring`` and the two
    weights are settings every Arena game has) :mod:`arena.belief`
    reads every crew seat played by a model (an LLM agent; scripted seats have
    no belief): its probability that the impostor is ``c``, for every player
    ``c`` alive at the meeting other than itself, from the model's score of
    ``The impostor is <c>.`` after its observation plus ``Question: who is the
    impostor?``, normalised over the candidates. A message's speaking reward
    is the mean change of the other living crew members' probability on the
    true impostor across it (negated for the impostor's messages). The game
    itself never sees a tokenizer. Cost: one forward pass per (listener,
    snapshot, candidate).

Metrics
    ``crew_win``, ``impostor_win``, ``end/<reason>`` (tasks, ejection, parity,
    timeout, forfeit: 1 for the reason the game ended, 0 for the others), ``ticks``,
    ``meetings``, ``kills``, ``tasks_done`` (share of all crew tasks),
    ``ejected_impostor`` / ``ejected_crew`` (ejections by role), and over crew
    ballots (left out without a meeting): ``vote_accuracy`` (share of votes
    for a player that named the impostor) and ``skip_rate``. With
    ``belief_scoring``: ``suspicion_accuracy`` (share of crew listening points
    whose most likely candidate is the impostor), ``belief_impostor`` (mean
    probability on the impostor) and ``listening_points`` (arena.belief's
    ``belief_accuracy``, ``belief_truth`` and ``listening_points``, named in
    this game's words by ``belief_metric_names``).

Quick setting (``quick=True``): ``QUICK`` replaces the published defaults of
the fields not given explicitly: 4 players on a 2x2 grid, 2 one-tick tasks
per crew member, kill cooldown 3 (1 at the start), at most 14 ticks: about 25
turns an episode instead of about 140, short enough for a tiny model on two
CPU cores, and still a game the impostor wins about half the time between
the scripted bots.

Version history
    v0: first version.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from gymnasium import spaces
from pydantic import Field, model_validator

from arena.belief import Discussion, Utterance
from arena.game import FreeText, GameConfig, IllegalMove, TextGame, clean_text

COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "pink", "cyan", "white", "brown")
ROOM_NAMES = (
    "cafeteria",
    "weapons",
    "navigation",
    "storage",
    "admin",
    "shields",
    "electrical",
    "medbay",
    "reactor",
    "security",
    "engine",
    "comms",
)
#: (dx, dy) per direction; y grows southwards
DIRECTIONS = {"north": (0, -1), "south": (0, 1), "east": (1, 0), "west": (-1, 0)}
IMPOSTOR = "impostor"
CREW, IMPOSTOR_TEAM = "crew", "impostor"
#: the fields ``quick=True`` sets (unless given explicitly)
QUICK: dict[str, Any] = {
    "num_players": 4,
    "grid_width": 2,
    "grid_height": 2,
    "tasks_per_crew": 2,
    "task_ticks": 1,
    "kill_cooldown": 3,
    "initial_kill_cooldown": 1,
    "max_ticks": 14,
}
#: why a game ended (``end/<reason>`` metrics)
END_REASONS = ("tasks", "ejection", "parity", "timeout", "forfeit")

Phase = Literal["tick", "discussion", "vote", "over"]
Move = tuple[str, Any]  # (kind, argument): ("move", room index), ("kill", seat), ("task", None), ...

_KEYWORD = re.compile(r"(?<!\w)(move|task|report|kill|wait)(?!\w)", re.IGNORECASE)
_MOVE_ARG = re.compile(r"\s*(?:to\s+)?(?:the\s+)?([A-Za-z_]+)", re.IGNORECASE)
_WORD_ARG = re.compile(r"\s*([A-Za-z_]+)")
_VOTE = re.compile(r"(?<!\w)vote(?:\s+for)?\s+([A-Za-z_]+)", re.IGNORECASE)
_SKIP = re.compile(r"(?<!\w)skip(?!\w)", re.IGNORECASE)
#: a reply that starts with a number picks that option of the listed moves or votes
_OPTION_NUMBER = re.compile(r"\s*(\d+)")


def seat_names(num_players: int) -> tuple[str, ...]:
    """``crew_1`` ... ``crew_{n-1}``, then ``impostor``."""
    return tuple(f"crew_{i}" for i in range(1, num_players)) + (IMPOSTOR,)


def numbered(options: list[str]) -> str:
    """``1 move weapons, 2 task, 3 wait``: the options as the observation lists them."""
    return ", ".join(f"{i} {o}" for i, o in enumerate(options, 1))


def pick_option(action: str, options: list[str]) -> str:
    """The text of option ``n`` when ``action`` starts with the number ``n``, else ``action`` itself;
    a number with no such option is an IllegalMove."""
    m = _OPTION_NUMBER.match(action)
    if m is None:
        return action
    digits = m.group(1)
    if len(digits) > 6 or not 1 <= int(digits) <= len(options):
        raise IllegalMove(f"there is no option {digits[:8]}: choose 1 to {len(options)} ({numbered(options)})")
    return options[int(digits) - 1]


@dataclass
class Meeting:
    """One meeting: who called it, the bodies it announced, the talk, the ballots, the outcome."""

    number: int
    tick: int
    reporter: str
    #: seat -> room index of every body announced
    dead: dict[str, int]
    #: the living players when it started (the candidates)
    present: list[str]
    #: who speaks, in order (all rounds)
    queue: list[str]
    transcript: list[tuple[str, str]] = field(default_factory=list)
    #: seat -> voted seat, None for skip
    ballots: dict[str, str | None] = field(default_factory=dict)
    ejected: str | None = None
    resolved: bool = False
    #: with belief scoring: each living crew member's observation at the start and after every message
    snapshots: list[dict[str, str]] = field(default_factory=list)


class SocialDeductionGame(TextGame):
    """A crew and one secret impostor; see the module docstring for the rules."""

    players: ClassVar[tuple[str, ...]] = seat_names(5)
    metadata: ClassVar[dict] = {"name": "social_deduction_v0", "render_modes": ["human", "ansi"], "is_parallelizable": False}
    #: the belief probes' metrics in this game's words (the truth is the impostor)
    belief_metric_names: ClassVar[Mapping[str, str]] = {"belief_accuracy": "suspicion_accuracy", "belief_truth": "belief_impostor"}
    description: ClassVar[str] = (
        "Among-Us-like social deduction: a crew does tasks on a grid of rooms, one impostor kills; "
        "simultaneous moves, discussion after a body is reported, then a secret vote."
    )

    class Config(GameConfig):
        quick: bool = Field(False, description="start from the QUICK setting instead of the published defaults")
        num_players: int = Field(5, ge=3, le=len(COLOURS), description="players, one of them the impostor (published 5)")
        grid_width: int = Field(3, ge=1, description="rooms per row (published grid 3x2)")
        grid_height: int = Field(2, ge=1, description="rows of rooms (published grid 3x2)")
        tasks_per_crew: int = Field(5, ge=1, le=50, description="tasks per crew member (published 5)")
        task_ticks: int = Field(2, ge=1, le=20, description="task moves one task needs (open)")
        kill_cooldown: int = Field(20, ge=0, description="ticks between kills (published 20)")
        initial_kill_cooldown: int = Field(10, ge=0, description="cooldown at the start (open)")
        max_ticks: int = Field(60, ge=1, le=10_000, description="ticks before the impostor wins on time (open)")
        discussion_rounds: int = Field(2, ge=0, le=10, description="times each living player speaks per meeting (published 2)")
        memory_ticks: int = Field(8, ge=0, le=100, description="sightings shown in the 'Seen' line")
        max_talk_chars: int = Field(160, ge=8, le=10_000, description="longer messages are cut when shown")
        reveal_ejected_role: bool = Field(True, description="say whether an ejected player was the impostor")
        task_weight: float = Field(0.0, description="return per finished task (crew)")
        report_weight: float = Field(0.0, description="return per meeting called")
        kill_weight: float = Field(0.0, description="return per kill (impostor)")
        vote_weight: float = Field(0.0, description="return per crew vote for the impostor")

        @model_validator(mode="before")
        @classmethod
        def _quick_defaults(cls, data: Any) -> Any:
            if isinstance(data, dict) and data.get("quick"):
                data = {**QUICK, **data}
            return data

        @model_validator(mode="after")
        def _check(self) -> SocialDeductionGame.Config:
            rooms = self.grid_width * self.grid_height
            if not 2 <= rooms <= len(ROOM_NAMES):
                raise ValueError(f"grid_width * grid_height = {rooms} rooms, but it must be between 2 and {len(ROOM_NAMES)}")
            return self

        @property
        def weights(self) -> dict[str, float]:
            return {
                "win": 1.0,
                "tasks": self.task_weight,
                "reports": self.report_weight,
                "kills": self.kill_weight,
                "correct_votes": self.vote_weight,
            }

    config: Config

    def __init__(self, config: GameConfig | None = None, render_mode: str | None = None, **kwargs: Any):
        super().__init__(config, render_mode, **kwargs)
        # the seats follow the configured number of players
        self.players = seat_names(self.config.num_players)
        self.possible_agents = list(self.players)
        self.observation_spaces = {p: spaces.Dict({"text": FreeText()}) for p in self.players}
        self.action_spaces = {p: FreeText() for p in self.players}

    # ----- setup -------------------------------------------------------------------------------
    def setup(self, rng: np.random.Generator) -> None:
        c = self.config
        self.rng = rng  # later meetings draw their speaking orders from it
        seats = list(self.players)
        colours = COLOURS[: len(seats)]
        deal = rng.permutation(len(seats))
        self.name = {s: colours[int(deal[i])] for i, s in enumerate(seats)}
        self.seat_of = {n: s for s, n in self.name.items()}
        self.rooms = ROOM_NAMES[: c.grid_width * c.grid_height]
        self.room_of = {s: 0 for s in seats}
        self.alive = {s: True for s in seats}
        self.bodies: dict[str, int] = {}  # dead seat -> room, until a meeting announces it
        self.public_dead: dict[str, str] = {}  # seat -> "killed" | "ejected", as everyone knows it
        self.tasks: dict[str, list[list[int]]] = {
            s: [[int(r), c.task_ticks] for r in rng.integers(0, len(self.rooms), size=c.tasks_per_crew)] for s in seats if s != IMPOSTOR
        }
        self.cooldown = c.initial_kill_cooldown
        self.tick = 0
        self.phase: Phase = "tick"
        self.pending: dict[str, Move] = {}
        #: per player: (tick, room, living players there, bodies there) at the end of each tick with company
        self.sightings: dict[str, list[tuple[int, int, tuple[str, ...], tuple[str, ...]]]] = {s: [] for s in seats}
        self.witnessed: dict[str, list[str]] = {s: [] for s in seats}
        self.meetings: list[Meeting] = []
        self.counts: dict[str, Counter] = {s: Counter() for s in seats}
        self.winner: str | None = None
        self.end_reason: str | None = None

    # ----- small helpers -----------------------------------------------------------------------
    def team(self, seat: str) -> str:
        return IMPOSTOR_TEAM if seat == IMPOSTOR else CREW

    def living(self) -> list[str]:
        return [s for s in self.players if self.alive[s]]

    def living_crew(self) -> list[str]:
        return [s for s in self.living() if s != IMPOSTOR]

    def by_colour(self, seats: list[str] | set[str] | tuple[str, ...]) -> list[str]:
        """Seats in ``COLOURS`` order of their names: a listing that reveals nothing about seats."""
        return sorted(seats, key=lambda s: COLOURS.index(self.name[s]))

    def names(self, seats) -> str:
        return ", ".join(self.name[s] for s in self.by_colour(seats)) or "none"

    def xy(self, room: int) -> tuple[int, int]:
        return room % self.config.grid_width, room // self.config.grid_width

    def neighbour(self, room: int, direction: str) -> int | None:
        x, y = self.xy(room)
        dx, dy = DIRECTIONS[direction]
        x, y = x + dx, y + dy
        if 0 <= x < self.config.grid_width and 0 <= y < self.config.grid_height:
            return y * self.config.grid_width + x
        return None

    def neighbours(self, room: int) -> list[int]:
        """Adjacent rooms, in the order north, south, east, west."""
        return [n for n in (self.neighbour(room, d) for d in DIRECTIONS) if n is not None]

    def pending_task(self, seat: str, room: int) -> list[int] | None:
        for task in self.tasks.get(seat, []):
            if task[0] == room and task[1] > 0:
                return task
        return None

    def tasks_left(self, seat: str) -> int:
        return sum(t[1] > 0 for t in self.tasks.get(seat, []))

    @property
    def meeting(self) -> Meeting | None:
        return self.meetings[-1] if self.meetings and not self.meetings[-1].resolved else None

    # ----- turn order ----------------------------------------------------------------------------
    def to_move(self) -> str:
        if self.phase == "tick":
            return next(s for s in self.living() if s not in self.pending)
        if self.phase == "discussion":
            m = self.meeting
            return m.queue[len(m.transcript)]
        if self.phase == "vote":
            return next(s for s in self.living() if s not in self.meeting.ballots)
        return self.players[0]

    def is_over(self) -> bool:
        return self.phase == "over"

    # ----- moves ---------------------------------------------------------------------------------
    def apply(self, player: str, action: str) -> None:
        if self.phase == "over":
            raise IllegalMove("the game is over")
        if self.phase == "tick":
            self.pending[player] = self.parse_tick_move(player, action)
            if all(s in self.pending for s in self.living()):
                self._resolve_tick()
        elif self.phase == "discussion":
            text = clean_text(action, self.config.max_talk_chars)
            if not text:
                raise IllegalMove("an empty message: say something to the others (e.g. where you were, whom you suspect)")
            m = self.meeting
            m.transcript.append((player, text))
            if len(m.transcript) == len(m.queue):
                self.phase = "vote"
            if self.config.belief_scoring:
                m.snapshots.append(self._crew_views())
        else:
            self.meeting.ballots[player] = self.parse_vote(action)
            if all(s in self.meeting.ballots for s in self.living()):
                self._resolve_vote()

    def legal_moves(self, seat: str) -> list[str]:
        """Every legal tick move for ``seat`` now, as text (the ``Your move`` line)."""
        room = self.room_of[seat]
        # rooms rather than directions: a move then names a room that the task list names too
        moves = [f"move {self.rooms[n]}" for n in self.neighbours(room)]
        if seat == IMPOSTOR or self.pending_task(seat, room):
            moves.append("task")
        if any(r == room for r in self.bodies.values()):
            moves.append("report")
        if seat == IMPOSTOR and self.cooldown == 0:
            moves += [f"kill {self.name[v]}" for v in self.by_colour(self._others_here(seat))]
        moves.append("wait")
        return moves

    def _others_here(self, seat: str) -> list[str]:
        return [s for s in self.living() if s != seat and self.room_of[s] == self.room_of[seat]]

    def parse_tick_move(self, seat: str, action: str) -> Move:
        """The move in ``action``, checked against the state at the start of the tick; or IllegalMove."""
        action = pick_option(action, self.legal_moves(seat))
        found = list(_KEYWORD.finditer(action))
        options = ", ".join(self.legal_moves(seat))
        if not found:
            raise IllegalMove(f"no move found: write one of: {options}")
        if len(found) > 1:
            raise IllegalMove(f"found {len(found)} moves; write exactly one of: {options}")
        kind, end = found[0].group(1).lower(), found[0].end()
        room = self.room_of[seat]
        here = self.rooms[room]
        if kind == "move":
            arg = _MOVE_ARG.match(action, end)
            word = arg.group(1).lower() if arg else ""
            if word in DIRECTIONS:
                target = self.neighbour(room, word)
                if target is None:
                    raise IllegalMove(f"there is no room {word} of {here}; moves: {options}")
                return ("move", target)
            if word in self.rooms:
                target = self.rooms.index(word)
                if target not in self.neighbours(room):
                    raise IllegalMove(f"{word} is not next to {here}; moves: {options}")
                return ("move", target)
            raise IllegalMove(f"move where? write move north/south/east/west or move <room>; moves: {options}")
        if kind == "task":
            if seat != IMPOSTOR and self.pending_task(seat, room) is None:
                rooms = sorted({self.rooms[t[0]] for t in self.tasks[seat] if t[1] > 0})
                where = ", ".join(rooms) if rooms else "nowhere: all your tasks are done"
                raise IllegalMove(f"you have no task in {here} (your tasks are in: {where})")
            return ("task", None)
        if kind == "report":
            if not any(r == room for r in self.bodies.values()):
                raise IllegalMove(f"there is no body in {here} to report")
            return ("report", None)
        if kind == "kill":
            if seat != IMPOSTOR:
                raise IllegalMove("only the impostor can kill")
            if self.cooldown > 0:
                raise IllegalMove(f"your kill cooldown has {self.cooldown} ticks left")
            arg = _WORD_ARG.match(action, end)
            word = arg.group(1).lower() if arg else ""
            victim = self.seat_of.get(word)
            if victim is None or victim == seat or not self.alive[victim] or self.room_of[victim] != room:
                here_names = self.names(self._others_here(seat))
                raise IllegalMove(f"kill whom? only a living player in {here} (here: {here_names})")
            return ("kill", victim)
        return ("wait", None)

    def parse_vote(self, action: str) -> str | None:
        """The seat voted for (None for skip); see the module docstring for the rule."""
        action = pick_option(action, self._vote_options())
        choices = "; ".join(self._vote_options())
        living = {self.name[s]: s for s in self.living()}
        m = _VOTE.search(action)
        if m:
            word = m.group(1).lower()
            if word == "skip":
                return None
            if word in living:
                return living[word]
            raise IllegalMove(f"{word!r} is not a living player; write one of: {choices}")
        if _SKIP.search(action):
            return None
        named = {living[w.lower()] for w in re.findall(r"[A-Za-z_]+", action) if w.lower() in living}
        if len(named) == 1:
            return named.pop()
        raise IllegalMove(f"no vote found: write one of: {choices}")

    def _vote_options(self) -> list[str]:
        return [f"vote {self.name[s]}" for s in self.by_colour(self.living())] + ["skip"]

    # ----- resolution ----------------------------------------------------------------------------
    def _resolve_tick(self) -> None:
        moves, self.pending = self.pending, {}
        start = dict(self.room_of)
        self.tick += 1
        kind, victim = moves.get(IMPOSTOR, ("wait", None))
        killed = victim if kind == "kill" and self.alive[IMPOSTOR] else None
        if killed is not None:
            self.alive[killed] = False
            self.bodies[killed] = start[killed]
            self.counts[IMPOSTOR]["kills"] += 1
            self.cooldown = self.config.kill_cooldown
        else:
            self.cooldown = max(0, self.cooldown - 1)
        for s in self.living():
            kind, arg = moves[s]
            if kind == "move":
                self.room_of[s] = arg
        if killed is not None:
            room = start[killed]
            line = f"tick {self.tick} in {self.rooms[room]}: {self.name[IMPOSTOR]} killed {self.name[killed]}."
            for s in self.living():
                if s != IMPOSTOR and room in (start[s], self.room_of[s]):
                    self.witnessed[s].append(line)
        for s in self.living():
            kind, arg = moves[s]
            if kind == "task" and s != IMPOSTOR:
                task = self.pending_task(s, self.room_of[s])
                task[1] -= 1
                if task[1] == 0:
                    self.counts[s]["tasks"] += 1
        for s in self.living():
            others = tuple(self._others_here(s))
            bodies = tuple(b for b, r in self.bodies.items() if r == self.room_of[s])
            if others or bodies:
                self.sightings[s].append((self.tick, self.room_of[s], others, bodies))
        reporters = [s for s in self.living() if moves[s][0] == "report"]
        if self._parity_reached():
            return self._end(IMPOSTOR_TEAM, "parity")
        if all(self.tasks_left(s) == 0 for s in self.tasks):
            return self._end(CREW, "tasks")
        if reporters:
            return self._start_meeting(reporters[0])
        if self.tick >= self.config.max_ticks:
            self._end(IMPOSTOR_TEAM, "timeout")

    def _parity_reached(self) -> bool:
        return len(self.living_crew()) <= (1 if self.alive[IMPOSTOR] else 0)

    def _start_meeting(self, reporter: str) -> None:
        self.counts[reporter]["reports"] += 1
        dead = dict(self.bodies)
        for s in dead:
            self.public_dead[s] = "killed"
        self.bodies.clear()
        queue: list[str] = []
        living = self.living()
        for _ in range(self.config.discussion_rounds):
            queue += [living[int(i)] for i in self.rng.permutation(len(living))]
        m = Meeting(len(self.meetings) + 1, self.tick, reporter, dead, living, queue)
        self.meetings.append(m)
        self.phase = "discussion" if queue else "vote"
        if self.config.belief_scoring:
            m.snapshots.append(self._crew_views())

    def _resolve_vote(self) -> None:
        m = self.meeting
        tally = Counter(m.ballots.values())
        top = max(tally.values())
        leaders = [k for k, v in tally.items() if v == top]
        m.ejected = leaders[0] if len(leaders) == 1 else None
        for s, target in m.ballots.items():
            if s != IMPOSTOR and target == IMPOSTOR:
                self.counts[s]["correct_votes"] += 1
        m.resolved = True
        if m.ejected is not None:
            self.alive[m.ejected] = False
            self.public_dead[m.ejected] = "ejected"
            if m.ejected == IMPOSTOR:
                return self._end(CREW, "ejection")
        for s in self.living():
            self.room_of[s] = 0
        self.phase = "tick"
        if self._parity_reached():
            return self._end(IMPOSTOR_TEAM, "parity")
        if self.tick >= self.config.max_ticks:
            self._end(IMPOSTOR_TEAM, "timeout")

    def _end(self, winner: str, reason: str) -> None:
        self.winner, self.end_reason, self.phase = winner, reason, "over"

    def forfeit(self, player: str, reason: str) -> None:
        super().forfeit(player, reason)
        self._end(CREW if self.team(player) == IMPOSTOR_TEAM else IMPOSTOR_TEAM, "forfeit")

    # ----- observations --------------------------------------------------------------------------
    def observe_text(self, player: str) -> str:
        c = self.config
        me = self.name[player]
        lines = [
            f"Social deduction game: {len(self.players)} players, one is a secret impostor. Crew win when every "
            "crew task is done (a dead player's tasks stay undone) or the impostor is voted out; the impostor wins "
            f"when it equals the crew in number, or when tick {c.max_ticks} ends.",
            "Map (north is up): " + " / ".join(" ".join(self.rooms[y * c.grid_width : (y + 1) * c.grid_width]) for y in range(c.grid_height)),
        ]
        if player == IMPOSTOR:
            lines.append(f"{self._impostor_line()} Kill cooldown: {self.cooldown} ticks.")
        else:
            lines.append(f"You are {me}, crew.")
        dead = self.by_colour(self.public_dead)
        dead_text = ", ".join(f"{self.name[s]} ({self._death_note(s)})" for s in dead) or "none"
        known_alive = [s for s in self.players if s not in self.public_dead]
        lines.append(f"Alive: {self.names(known_alive)}. Dead: {dead_text}.")
        done = sum(t[1] == 0 for ts in self.tasks.values() for t in ts)
        total = sum(len(ts) for ts in self.tasks.values())
        lines.append(f"Crew tasks done: {done} of {total}.")
        lines += [self._meeting_summary(m) for m in self.meetings if m.resolved]
        if self.witnessed[player]:
            lines.append("Witnessed: " + " ".join(self.witnessed[player]))
        seen = self.sightings[player][-c.memory_ticks :] if c.memory_ticks else []
        if seen:
            lines.append("Seen: " + "; ".join(f"t{t} {self.rooms[r]}: {self._company(o, b)}" for t, r, o, b in seen))
        if self.phase == "over":
            lines.append(self._outcome_line())
        elif not self.alive[player]:
            lines.append(f"You are dead. Tick {self.tick} of {c.max_ticks}.")
        elif self.phase == "tick":
            lines += self._tick_lines(player)
        else:
            lines += self._meeting_lines(player)
        return "\n".join(lines)

    def _company(self, others: tuple[str, ...], bodies: tuple[str, ...]) -> str:
        return ", ".join([self.name[s] for s in self.by_colour(others)] + [f"body of {self.name[b]}" for b in self.by_colour(bodies)])

    def _impostor_line(self) -> str:
        return f"[private] You are {self.name[IMPOSTOR]}, the impostor."

    def _death_note(self, seat: str) -> str:
        how = self.public_dead[seat]
        if how == "ejected" and self.config.reveal_ejected_role:
            return f"ejected, {'the impostor' if seat == IMPOSTOR else 'crew'}"
        return how

    def _tick_lines(self, player: str) -> list[str]:
        room = self.room_of[player]
        bodies = [s for s, r in self.bodies.items() if r == room]
        lines = [
            f"Tick {self.tick + 1} of {self.config.max_ticks}. You are in {self.rooms[room]}. "
            f"Here: {self.names(self._others_here(player))}. Bodies here: {self.names(bodies)}."
        ]
        if player == IMPOSTOR:
            lines.append("You have no real tasks: task only pretends.")
        else:
            left = [t for t in self.tasks[player] if t[1] > 0]
            text = ", ".join(f"{self.rooms[r]} ({n} tick{'s' if n > 1 else ''})" for r, n in left) or "none"
            lines.append(f"Your tasks left: {text}.")
        if player in self.pending:
            lines.append(f"Your move this tick: {self._move_text(self.pending[player])}. Waiting for the others.")
        else:
            lines.append("Your move (write it or its number): " + numbered(self.legal_moves(player)))
        return lines

    def _move_text(self, move: Move) -> str:
        kind, arg = move
        if kind == "move":
            return f"move {self.rooms[arg]}"
        if kind == "kill":
            return f"kill {self.name[arg]}"
        return kind

    def _meeting_header(self, m: Meeting) -> str:
        found = ", ".join(f"{self.name[s]} (found in {self.rooms[r]})" for s, r in sorted(m.dead.items(), key=lambda x: COLOURS.index(self.name[x[0]])))
        return f"Meeting {m.number} (tick {m.tick}, called by {self.name[m.reporter]}): dead {found or 'none'}."

    def _meeting_summary(self, m: Meeting) -> str:
        votes = ", ".join(f"{self.name[s]}: {'skip' if m.ballots[s] is None else self.name[m.ballots[s]]}" for s in self.by_colour(m.ballots))
        if m.ejected is None:
            outcome = "Nobody was ejected."
        else:
            outcome = f"{self.name[m.ejected]} was ejected"
            if self.config.reveal_ejected_role:
                outcome += " and was the impostor." if m.ejected == IMPOSTOR else " and was not the impostor."
            else:
                outcome += "."
        return f"{self._meeting_header(m)} Votes: {votes}. {outcome}"

    def _meeting_lines(self, player: str) -> list[str]:
        m = self.meeting
        lines = [self._meeting_header(m), "Discussion:"]
        lines += [f'{self.name[s]}: "{text}"' for s, text in m.transcript] or ["(nothing said yet)"]
        if self.phase == "discussion":
            rounds = self.config.discussion_rounds
            k = len(m.transcript) // max(len(m.queue) // max(rounds, 1), 1) + 1
            speaker = m.queue[len(m.transcript)]
            if speaker == player:
                lines.append(f"Your turn to speak (round {k} of {rounds}): one short message to the others.")
            else:
                lines.append(f"Waiting for {self.name[speaker]} to speak (round {k} of {rounds}).")
        elif player in m.ballots:
            target = m.ballots[player]
            lines.append(f"You voted: {'skip' if target is None else 'vote ' + self.name[target]}. Waiting for the others.")
        else:
            lines.append("Vote now, in secret (write it or its number): " + numbered(self._vote_options()))
        return lines

    def _outcome_line(self) -> str:
        why = {
            "tasks": "every crew task is done",
            "ejection": "the impostor was ejected",
            "parity": "the impostor equals the crew in number",
            "timeout": f"time ran out after tick {self.config.max_ticks}",
            "forfeit": "the other team forfeited",
        }[self.end_reason]
        winner = "crew" if self.winner == CREW else "impostor"
        return f"Game over after tick {self.tick}: the {winner} won ({why}). The impostor was {self.name[IMPOSTOR]}."

    def _crew_views(self) -> dict[str, str]:
        return {s: self.observe_text(s) for s in self.living_crew()}

    # ----- outcome -------------------------------------------------------------------------------
    def terms(self, seat: str) -> dict[str, float]:
        """The raw reward terms of one seat (see the module docstring)."""
        won = self.winner is not None and self.team(seat) == self.winner
        n = self.counts[seat]
        out = {"win": float(won), "reports": float(n["reports"])}
        if seat == IMPOSTOR:
            out["kills"] = float(n["kills"])
        else:
            out["tasks"] = float(n["tasks"])
            out["correct_votes"] = float(n["correct_votes"])
        return out

    def returns(self) -> dict[str, float]:
        w = self.config.weights
        return {s: float(sum(w[k] * v for k, v in self.terms(s).items())) for s in self.players}

    def reward_components(self) -> dict[str, float]:
        return {f"{k}/{s}": v for s in self.players for k, v in self.terms(s).items()}

    def outcome_label(self) -> str | None:
        if self.winner is None:
            return None
        return "crew win" if self.winner == CREW else "impostor win"

    def metrics(self) -> dict[str, float]:
        crew_ballots = [t for m in self.meetings for s, t in m.ballots.items() if s != IMPOSTOR]
        named = [t for t in crew_ballots if t is not None]
        ejected = [m.ejected for m in self.meetings if m.ejected is not None]
        total = sum(len(ts) for ts in self.tasks.values())
        out = {
            "crew_win": float(self.winner == CREW),
            "impostor_win": float(self.winner == IMPOSTOR_TEAM),
            "ticks": float(self.tick),
            "meetings": float(len(self.meetings)),
            "kills": float(self.counts[IMPOSTOR]["kills"]),
            "tasks_done": sum(t[1] == 0 for ts in self.tasks.values() for t in ts) / total,
            "ejected_impostor": float(sum(s == IMPOSTOR for s in ejected)),
            "ejected_crew": float(sum(s != IMPOSTOR for s in ejected)),
        }
        for reason in END_REASONS:
            out[f"end/{reason}"] = float(self.end_reason == reason)
        if crew_ballots:
            out["skip_rate"] = (len(crew_ballots) - len(named)) / len(crew_ballots)
        if named:
            out["vote_accuracy"] = sum(t == IMPOSTOR for t in named) / len(named)
        return out

    def sample_moves(self, player: str) -> list[str]:
        if self.phase == "tick" and self.alive[player] and player not in self.pending:
            return self.legal_moves(player)
        if self.phase == "discussion":
            others = [self.name[s] for s in self.by_colour(self.living()) if s != player]
            return ["I was doing my tasks.", "I saw nothing suspicious."] + [f"I suspect {n}." for n in others[:2]]
        if self.phase == "vote" and player not in self.meeting.ballots:
            return self._vote_options()
        return []

    def private_info(self) -> dict[str, list[str]]:
        return {IMPOSTOR: [self._impostor_line()]}

    # ----- belief scoring (arena.belief, run by TextGame.after_play with belief_scoring) --------------
    def discussions(self) -> list[Discussion]:
        """Every meeting's discussion as text for :mod:`arena.belief`: what each living crew member
        saw before and after each message, the candidates and the truth."""
        out = []
        truth = self.name[IMPOSTOR]
        for m in self.meetings:
            if not m.snapshots:
                continue
            listeners = list(m.snapshots[0])
            answers = {l: {self.name[s]: f"The impostor is {self.name[s]}." for s in self.by_colour(m.present) if s != l} for l in listeners}
            utterances = [
                Utterance(
                    speaker=s,
                    listeners=tuple(l for l in listeners if l != s),
                    before=i,
                    after=i + 1,
                    negate=s == IMPOSTOR,
                )
                for i, (s, _) in enumerate(m.transcript)
                if i + 1 < len(m.snapshots)
            ]
            out.append(
                Discussion(
                    question="Question: who is the impostor?",
                    truth=truth,
                    answers=answers,
                    snapshots=list(m.snapshots),
                    utterances=utterances,
                )
            )
        return out
