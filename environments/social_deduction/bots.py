"""Scripted bots for ``social_deduction-v0``: an evidence-driven crew member and a lying impostor.

Each bot reads only ``view.observation`` through :func:`read_state` (the
game's stable lines: ``You are ...``, ``Map ...``, ``Alive ...``,
``Witnessed ...``, ``Seen ...``, ``Tick ...``, ``Your tasks left ...``,
``Your move ...``, the meeting header, the discussion, ``Vote now ...``), and
draws any randomness from ``view.rng``. Bots are stateless: what they said
earlier in a meeting they read back from the discussion. They answer a listed
move or vote as its number and text (``3 task``, ``2 vote red``) and speak in
plain sentences.

- ``crew``: reports a body in its room, works on a task in its room, else
  walks toward its nearest task room (and roams once its tasks are done, so
  that bodies get found). Its suspect, in order: a player it saw kill; else
  the one other player it saw next to a victim's body; else the one other
  player it last saw together with a victim; else nobody. It says so in the
  discussion and votes for its suspect; without one, for the player another
  speaker says it saw kill (``I saw X kill ...``); else it skips.
- ``impostor``: kills when off cooldown and alone with one living player
  (and no body in the room); leaves a room with a body; lingers next to a
  lone crew member when its cooldown is nearly over; otherwise wanders and
  pretends tasks. In a discussion it lies: it accuses a scapegoat (the player
  it accused before in this meeting, else the one the others accuse most,
  else a random living crew member) of being seen near the body, and votes
  for the scapegoat.

A bot seated in the other role plays that role plainly: ``crew`` as the
impostor never kills, pretends tasks, says it saw nothing and skips;
``impostor`` as a crew member plays ``crew``. So ``impostor`` in every seat
is a full game of bots, which is why it comes first in ``BOTS``: ``arena play
social_deduction-v0`` seats it around the human by default. The random
impostor the tests use is the shared ``random`` policy (uniform over the
game's legal moves).

``BOTS`` maps short names to the classes, all constructible with no arguments.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from arena.agents.base import PlayerView, ScriptedPolicy

_ME = re.compile(r"^(?:\[private\] )?You are (\w+), (crew|the impostor)\.", re.MULTILINE)
_MAP = re.compile(r"^Map \(north is up\): (.*)$", re.MULTILINE)
_ALIVE = re.compile(r"^Alive: ([^.]*)\.", re.MULTILINE)
_COOLDOWN = re.compile(r"^\[private\] You are \w+, the impostor\. Kill cooldown: (\d+) ticks\.", re.MULTILINE)
_WITNESSED = re.compile(r"^Witnessed: (.*)$", re.MULTILINE)
_WITNESS = re.compile(r"tick (\d+) in (\w+): (\w+) killed (\w+)\.")
#: status lines: talk is shown on lines of its own that start with the speaker, so it cannot forge these
_STATUS = re.compile(r"^(Your move this tick:|You are dead\.|Game over|Your turn to speak|You voted:)", re.MULTILINE)
_SEEN = re.compile(r"^Seen: (.*)$", re.MULTILINE)
_TICK = re.compile(r"^Tick (\d+) of \d+\. You are in (\w+)\. Here: ([^.]*)\. Bodies here: ([^.]*)\.", re.MULTILINE)
_TASKS = re.compile(r"^Your tasks left: (.*)\.$", re.MULTILINE)
_TASK_ITEM = re.compile(r"(\w+) \(\d+ ticks?\)")
_MOVES = re.compile(r"^Your move \(write it or its number\): (.*)$", re.MULTILINE)
_VOTES = re.compile(r"^Vote now, in secret \(write it or its number\): (.*)$", re.MULTILINE)
_HEADER = re.compile(r"^Meeting \d+ \(tick \d+, called by (\w+)\): dead (.*?)\.$", re.MULTILINE)
_DEAD_ITEM = re.compile(r"(\w+) \(found in (\w+)\)")
_SAID = re.compile(r'^(\w+): "(.*)"$', re.MULTILINE)
_SAW_KILL = re.compile(r"I saw (\w+) kill ", re.IGNORECASE)
_ACCUSE = re.compile(r"(?:suspect|vote(?: for)?) (\w+)|(\w+) is the impostor", re.IGNORECASE)


def _options(listing: str) -> list[str]:
    """``1 move weapons, 2 task`` -> ``["move weapons", "task"]``."""
    return [item.strip().split(" ", 1)[1] for item in listing.split(",")]


def answer(option: str, options: list[str]) -> str:
    """How a bot answers: the option's number, then its text (``2 task``)."""
    return f"{options.index(option) + 1} {option}"


def _names(text: str) -> list[str]:
    return [] if text.strip() == "none" else [n.strip() for n in text.split(",") if n.strip()]


@dataclass
class State:
    """What a bot reads from one observation."""

    me: str
    impostor: bool
    phase: str  # tick | waiting | speak | listen | vote | voted | dead | over
    grid: list[list[str]] = field(default_factory=list)
    alive: list[str] = field(default_factory=list)
    cooldown: int = 0
    #: (tick, room, killer, victim) for every kill it saw
    witnessed: list[tuple[int, str, str, str]] = field(default_factory=list)
    #: (tick, room, players seen there with it, bodies seen there)
    seen: list[tuple[int, str, list[str], list[str]]] = field(default_factory=list)
    room: str = ""
    here: list[str] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    moves: list[str] = field(default_factory=list)
    #: the current meeting: who called it and the bodies it announced (victim, room)
    reporter: str = ""
    dead: list[tuple[str, str]] = field(default_factory=list)
    #: the current meeting's discussion so far: (speaker, message)
    said: list[tuple[str, str]] = field(default_factory=list)
    vote_options: list[str] = field(default_factory=list)


def read_state(text: str) -> State:
    """Parse a ``social_deduction`` observation; raise ValueError when it is not one."""
    me = _ME.search(text)
    if me is None:
        raise ValueError("not a social_deduction observation")
    st = State(me=me.group(1), impostor=me.group(2) == "the impostor", phase="over")
    grid = _MAP.search(text)
    if grid:
        st.grid = [row.split() for row in grid.group(1).split(" / ")]
    alive = _ALIVE.search(text)
    st.alive = _names(alive.group(1)) if alive else []
    cd = _COOLDOWN.search(text)
    st.cooldown = int(cd.group(1)) if cd else 0
    witnessed = _WITNESSED.search(text)
    if witnessed:
        st.witnessed = [(int(t), r, k, v) for t, r, k, v in _WITNESS.findall(witnessed.group(1))]
    seen = _SEEN.search(text)
    if seen:
        for entry in seen.group(1).split("; "):
            head, _, who = entry.partition(": ")
            tick, _, room = head.partition(" ")
            items = _names(who)
            bodies = [i.removeprefix("body of ") for i in items if i.startswith("body of ")]
            st.seen.append((int(tick.lstrip("t")), room, [i for i in items if not i.startswith("body of ")], bodies))
    tick = _TICK.search(text)
    if tick:
        st.room, st.here, st.bodies = tick.group(2), _names(tick.group(3)), _names(tick.group(4))
    tasks = _TASKS.search(text)
    if tasks:
        st.tasks = _TASK_ITEM.findall(tasks.group(1))
    moves, votes = _MOVES.search(text), _VOTES.search(text)
    status = {m.group(1) for m in _STATUS.finditer(text)}
    headers = list(_HEADER.finditer(text))
    if moves:
        st.phase, st.moves = "tick", _options(moves.group(1))
    elif "Your move this tick:" in status:
        st.phase = "waiting"
    elif "You are dead." in status:
        st.phase = "dead"
    elif "Game over" not in status and headers:
        current = headers[-1]
        st.reporter = current.group(1)
        st.dead = _DEAD_ITEM.findall(current.group(2))
        st.said = _SAID.findall(text[current.end() :])
        if "Your turn to speak" in status:
            st.phase = "speak"
        elif votes:
            st.phase, st.vote_options = "vote", _options(votes.group(1))
        else:
            st.phase = "voted" if "You voted:" in status else "listen"
    return st


# ----- shared reasoning ----------------------------------------------------------------------------
def position(grid: list[list[str]], room: str) -> tuple[int, int]:
    for y, row in enumerate(grid):
        if room in row:
            return row.index(room), y
    raise ValueError(f"room {room!r} is not on the map")


def step_toward(st: State, targets: list[str]) -> str | None:
    """The ``move <room>`` among the legal moves that brings it closest to the nearest target room."""
    if not targets or not st.grid:
        return None
    goals = [position(st.grid, t) for t in targets]
    best, best_d = None, None
    for move in st.moves:
        if not move.startswith("move "):
            continue
        x, y = position(st.grid, move.split()[1])
        d = min(abs(x - gx) + abs(y - gy) for gx, gy in goals)
        if best_d is None or d < best_d:
            best, best_d = move, d
    return best


def crew_suspect(st: State) -> tuple[str | None, str]:
    """(suspect, reason as a sentence), from its own evidence only; (None, ...) when it has none."""
    alive = set(st.alive)
    for tick, room, killer, victim in reversed(st.witnessed):
        if killer in alive and killer != st.me:
            return killer, f"{killer} is the impostor: I saw {killer} kill {victim} in {room} at tick {tick}."
    for victim, _ in st.dead:
        first = next(((t, r, who) for t, r, who, bodies in st.seen if victim in bodies), None)
        if first is not None:
            tick, room, who = first
            if len(who) == 1 and who[0] in alive:
                return who[0], f"I suspect {who[0]}: I saw {who[0]} next to the body of {victim} in {room} at tick {tick}."
    for victim, _ in st.dead:
        for tick, room, who, _ in reversed(st.seen):
            if victim in who:
                others = [p for p in who if p != victim and p != st.me]
                if len(others) == 1 and others[0] in alive:
                    return others[0], f"I suspect {others[0]}: I last saw {victim} with {others[0]} in {room} at tick {tick}."
                break
    where = f" in {st.seen[-1][1]}" if st.seen else ""
    return None, f"I was doing my tasks{where}. I have no suspect yet."


def witnessed_by_others(st: State) -> str | None:
    """The living player another speaker says it saw kill (``I saw X kill ...``), when exactly one is named so."""
    named = {m.group(1).lower() for speaker, message in st.said if speaker != st.me for m in _SAW_KILL.finditer(message)}
    named = {n for n in named if n in st.alive and n != st.me}
    return named.pop() if len(named) == 1 else None


def accusations(st: State) -> Counter:
    """How often each living player other than the reader was accused in the current discussion."""
    count: Counter = Counter()
    for speaker, message in st.said:
        for a, b in _ACCUSE.findall(message):
            name = (a or b).lower()
            if name in st.alive and name != st.me and name != speaker:
                count[name] += 1
    return count


class _SocialBot(ScriptedPolicy):
    """Shared plumbing: subclasses decide on an option's text (or a message); listed moves and
    votes are answered as ``<number> <option>``."""

    def decide(self, st: State, view: PlayerView) -> str:
        raise NotImplementedError

    def choose(self, view: PlayerView) -> str:
        st = read_state(view.observation)
        text = self.decide(st, view)
        if st.phase == "tick":
            return answer(text, st.moves)
        if st.phase == "vote":
            return answer(text, st.vote_options)
        return text


class CrewBot(_SocialBot):
    """Does tasks, reports bodies, accuses and votes only on its own evidence (see the module docstring)."""

    policy_id = "scripted/crew"

    def decide(self, st: State, view: PlayerView) -> str:
        if st.impostor:
            return self._as_impostor(st, view)
        if st.phase == "tick":
            if "report" in st.moves:
                return "report"
            if "task" in st.moves:
                return "task"
            walks = [m for m in st.moves if m.startswith("move ")]
            # done: roam, so that bodies get found
            return step_toward(st, st.tasks) or walks[int(view.rng.integers(len(walks)))]
        suspect, reason = crew_suspect(st)
        if st.phase == "speak":
            return reason
        if st.phase == "vote":
            suspect = suspect or witnessed_by_others(st)
            return f"vote {suspect}" if suspect else "skip"
        return "wait"

    def _as_impostor(self, st: State, view: PlayerView) -> str:
        if st.phase == "tick":
            calm = [m for m in st.moves if not m.startswith(("kill", "report"))]
            return calm[int(view.rng.integers(len(calm)))]
        if st.phase == "speak":
            return "I was doing my tasks. I saw nothing."
        return "skip" if st.phase == "vote" else "wait"


class ImpostorBot(_SocialBot):
    """Kills when alone with a victim and off cooldown, lies in the discussion (see the module docstring)."""

    policy_id = "scripted/impostor"

    #: linger beside a lone crew member when the cooldown has at most this many ticks left
    LINGER = 2

    def decide(self, st: State, view: PlayerView) -> str:
        if not st.impostor:
            return CrewBot().decide(st, view)
        if st.phase == "tick":
            return self._move(st, view)
        target = self._scapegoat(st, view)
        if st.phase == "speak":
            room = st.dead[0][1] if st.dead else "the last room"
            return f"I suspect {target}: I saw {target} near the body in {room}."
        if st.phase == "vote":
            return f"vote {target}" if target else "skip"
        return "wait"

    def _move(self, st: State, view: PlayerView) -> str:
        walks = [m for m in st.moves if m.startswith("move ")]
        if len(st.here) == 1 and not st.bodies and f"kill {st.here[0]}" in st.moves:
            return f"kill {st.here[0]}"
        if st.bodies and walks:
            return walks[int(view.rng.integers(len(walks)))]
        if len(st.here) == 1 and st.cooldown <= self.LINGER:
            return "task"
        choices = walks + ["task"]
        return choices[int(view.rng.integers(len(choices)))]

    def _scapegoat(self, st: State, view: PlayerView) -> str | None:
        for speaker, message in st.said:
            if speaker == st.me:
                for a, b in _ACCUSE.findall(message):
                    name = (a or b).lower()
                    if name in st.alive and name != st.me:
                        return name
        blamed = accusations(st)
        if blamed:
            return max(sorted(blamed), key=lambda n: blamed[n])
        others = [n for n in st.alive if n != st.me]
        return others[int(view.rng.integers(len(others)))] if others else None


BOTS: dict[str, type[ScriptedPolicy]] = {
    "impostor": ImpostorBot,
    "crew": CrewBot,
}
