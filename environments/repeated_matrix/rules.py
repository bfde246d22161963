"""Repeated 2x2 matrix games with hidden simultaneous moves — ``repeated_matrix-v0``.

Source: Akata et al., "Playing repeated games with Large Language Models"
(2023). Two players play the same 2x2 game for ``rounds`` rounds (default 10)
and see the full history after every round.

Roles
    ``player_0`` and ``player_1``. Both face the same game; only Battle of the
    Sexes is asymmetric (``player_0`` prefers option 1, ``player_1`` option 2).

Turn order (simultaneous moves as AEC turns)
    Each round ``player_0`` chooses first, then ``player_1`` chooses without
    seeing that choice; then the round resolves and both see the outcome.

What each player sees (text, from its own point of view)
    A short explanation, the payoff table as "your move vs theirs: your
    points/their points", "Round k of N", the history of resolved rounds, its
    own total and how to answer. ``player_0`` also sees its own pending choice
    while it waits. Example (prisoner's dilemma, round 3)::

        Repeated game with another player, 10 rounds. Each round you both choose J or F at the same time; then both choices are shown.
        Points (you/them) for your choice vs theirs: J vs J 8/8, J vs F 0/10, F vs J 10/0, F vs F 5/5.
        Round 3 of 10. Your total: 8.
        History (you/them, your points): J/J 8, J/F 0
        Answer with J or F.

    The lines ``History (you/them, your points): ...`` (``none`` before the
    first round) and ``Answer with X or Y.`` (option 1 first) are stable so
    scripted bots can parse them.

Options and labels
    Every game has option 1 (the cooperative one: cooperate, stag, swerve; in
    Battle of the Sexes ``player_0``'s favourite) and option 2. They are
    labelled ``J`` and ``F`` by default, as in Akata et al. (neutral letters,
    so names like "cooperate" do not prime the model). With
    ``shuffle_labels`` each episode draws two distinct random capital letters
    (never ``A`` or ``I``, which are English words) from the ``rng`` given to
    ``setup``, so a policy cannot learn the letters instead of the table.

Action format and parsing rule
    Free text. The move is the label that appears in the text as a standalone
    word: a label counts where it is not preceded or followed by a word
    character (Unicode letter, digit or underscore), matched ASCII
    case-insensitively (``j`` counts as ``J``; no Unicode case folding).
    Repeating a label is fine ("J. Final answer: J"). If neither label or both
    labels appear, the move is illegal: the shared illegal-move rule re-asks the
    player up to ``max_illegal_retries`` times with the reason appended, and
    one more illegal move forfeits: the game ends, a pending (unresolved)
    round is discarded, and ``forfeit_penalty`` is added to the offender.

Payoffs (row: your choice, column: theirs; "you/them")
    Prisoner's dilemma (Akata et al.): cooperate J, defect F
        J vs J 8/8, J vs F 0/10, F vs J 10/0, F vs F 5/5
    Battle of the sexes (Akata et al.: 10 for the preferred event, 7 for the
    other, 0 if apart), shown to ``player_0``; ``player_1`` sees it mirrored
        J vs J 10/7, J vs F 0/0, F vs J 0/0, F vs F 7/10
    Stag hunt (Skyrms, "The Stag Hunt"; hare is safe): stag J, hare F
        J vs J 4/4, J vs F 0/3, F vs J 3/0, F vs F 3/3
    Chicken (Rapoport & Guyer's ordinal payoffs): swerve J, straight F
        J vs J 3/3, J vs F 2/4, F vs J 4/2, F vs F 1/1
    All payoffs are non-negative, so forfeiting never saves a player from
    losses (textbook Chicken with a negative crash payoff would make quitting
    early attractive).

Rewards
    ``returns()`` are the cumulative points of the resolved rounds, so
    per-step rewards arrive when ``player_1``'s move resolves a round.
    ``reward_components()`` gives ``payoff/<player>`` (total points, without
    the forfeit penalty). The group return is the base class's default: the
    mean of the two players' returns (forfeit penalty included).

Metrics (over resolved rounds; "defect" means option 2, "cooperate" option 1)
    ``rounds_played``
    ``coop_rate/<p>``          share of rounds p chose option 1
    ``mean_payoff/<p>``        p's points per resolved round
    ``mutual_coop_rate``       share of rounds both chose option 1
    ``coordination_rate``      share of rounds both chose the same option
                               (the success measure for Battle of the Sexes
                               and Stag Hunt)
    ``retaliation/<p>``        P(p defects in round t | the opponent defected
                               in round t-1)
    ``forgiveness/<p>``        P(p cooperates in round t+1 | p retaliated in
                               round t (defected after the opponent's
                               defection in t-1) and the opponent cooperated in
                               round t): whether p returns to cooperation when
                               given the chance. Tit-for-tat scores 1, grim
                               trigger 0.
    A rate whose condition never occurred is left out rather than reported as
    0 or NaN, so averages over episodes only count episodes where it is
    defined. With no resolved round every rate is left out.

Not implemented (candidates for a later version): the "predict the
opponent's move first" prompting variant.

Version history
    v0: first version (four matrices, optional shuffled letter labels).
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from arena.game import GameConfig, IllegalMove, TextGame

MatrixName = Literal["prisoners_dilemma", "battle_of_the_sexes", "stag_hunt", "chicken"]

#: PAYOFFS[matrix][a0][a1] = (player_0's points, player_1's points); index 0 is option 1.
PAYOFFS: dict[str, tuple[tuple[tuple[float, float], ...], ...]] = {
    "prisoners_dilemma": (((8, 8), (0, 10)), ((10, 0), (5, 5))),
    "battle_of_the_sexes": (((10, 7), (0, 0)), ((0, 0), (7, 10))),
    "stag_hunt": (((4, 4), (0, 3)), ((3, 0), (3, 3))),
    "chicken": (((3, 3), (2, 4)), ((4, 2), (1, 1))),
}

# "A" and "I" are English words ("I choose K"): as labels they would make
# ordinary sentences ambiguous, so shuffled labels never use them.
LABEL_POOL = "BCDEFGHJKLMNOPQRSTUVWXYZ"

_LABEL_RE = re.compile(r"^[A-Za-z]+$")


class RepeatedMatrixGame(TextGame):
    """A repeated 2x2 game; see the module docstring for the rules."""

    players: ClassVar[tuple[str, ...]] = ("player_0", "player_1")
    metadata: ClassVar[dict] = {"name": "repeated_matrix_v0", "render_modes": ["human", "ansi"], "is_parallelizable": False}
    description: ClassVar[str] = "Repeated 2x2 games (Prisoner's Dilemma, Battle of the Sexes, Stag Hunt, Chicken) with hidden simultaneous moves."

    class Config(GameConfig):
        matrix: MatrixName = Field("prisoners_dilemma", description="which 2x2 game is repeated")
        # 10 rounds is Akata et al.'s setting: long enough for reciprocity to matter.
        rounds: int = Field(10, ge=1, description="number of rounds")
        # Random letters stop a policy from relying on the names instead of the table.
        shuffle_labels: bool = Field(False, description="draw two random letter labels per episode from the setup rng")
        # Akata et al. use J and F: neutral letters with no meaning attached.
        labels: tuple[str, str] = Field(("J", "F"), description="labels of option 1 and option 2 when not shuffled")

        @field_validator("labels")
        @classmethod
        def _check_labels(cls, v: tuple[str, str]) -> tuple[str, str]:
            for label in v:
                if not _LABEL_RE.match(label):
                    raise ValueError(f"label {label!r} must be ASCII letters only")
            if v[0].lower() == v[1].lower():
                raise ValueError(f"labels {v!r} must differ (ignoring case)")
            return v

    config: Config

    # ----- rules ------------------------------------------------------------------------------
    def setup(self, rng: np.random.Generator) -> None:
        if self.config.shuffle_labels:
            picks = rng.choice(len(LABEL_POOL), size=2, replace=False)
            self.labels: tuple[str, str] = (LABEL_POOL[int(picks[0])], LABEL_POOL[int(picks[1])])
        else:
            self.labels = tuple(self.config.labels)  # type: ignore[assignment]
        self.table = PAYOFFS[self.config.matrix]
        # each resolved round: (player_0's option, player_1's option), 0 = option 1
        self.history: list[tuple[int, int]] = []
        self.pending: int | None = None  # player_0's hidden choice this round
        alternatives = []
        for i, label in enumerate(self.labels):
            # explicit case variants instead of re.IGNORECASE, which would also
            # match Unicode look-alikes (the Kelvin sign for K, long s for S)
            body = "".join(f"[{c.upper()}{c.lower()}]" for c in label)
            alternatives.append(f"(?P<o{i}>{body})")
        self._move_re = re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)")

    def to_move(self) -> str:
        return "player_0" if self.pending is None else "player_1"

    def is_over(self) -> bool:
        return len(self.history) >= self.config.rounds

    def apply(self, player: str, action: str) -> None:
        option = self.parse_move(action)
        if player == "player_0":
            self.pending = option
        else:
            assert self.pending is not None  # player_1 only moves after player_0
            self.history.append((self.pending, option))
            self.pending = None

    def parse_move(self, action: str) -> int:
        """The option (0 or 1) named in ``action``, or IllegalMove; see the module docstring."""
        found: set[int] = set()
        for m in self._move_re.finditer(action):
            found.add(0 if m.group("o0") is not None else 1)
            if len(found) == 2:
                break
        a, b = self.labels
        if not found:
            raise IllegalMove(f"no option found: reply with exactly one of {a} or {b} as a separate word")
        if len(found) == 2:
            raise IllegalMove(f"both options found: reply with only one of {a} or {b}")
        return found.pop()

    def _points(self, a0: int, a1: int) -> tuple[float, float]:
        p0, p1 = self.table[a0][a1]
        return float(p0), float(p1)

    def returns(self) -> dict[str, float]:
        totals = [0.0, 0.0]
        for a0, a1 in self.history:
            p0, p1 = self._points(a0, a1)
            totals[0] += p0
            totals[1] += p1
        return {"player_0": totals[0], "player_1": totals[1]}

    # ----- observations -----------------------------------------------------------------------
    def observe_text(self, player: str) -> str:
        me = self.players.index(player)
        a, b = self.labels
        n = self.config.rounds
        cells = []
        for mine in (0, 1):
            for theirs in (0, 1):
                pts = self._points(*((mine, theirs) if me == 0 else (theirs, mine)))
                cells.append(f"{self.labels[mine]} vs {self.labels[theirs]} {_num(pts[me])}/{_num(pts[1 - me])}")
        lines = [
            f"Repeated game with another player, {n} rounds. Each round you both choose {a} or {b} at the same time; then both choices are shown.",
            "Points (you/them) for your choice vs theirs: " + ", ".join(cells) + ".",
        ]
        totals = self.returns()
        mine_total = _num(totals[player])
        if self.is_over():
            theirs_total = _num(totals[self.players[1 - me]])
            lines.append(f"Game over after {len(self.history)} rounds. Your total: {mine_total}, theirs: {theirs_total}.")
        else:
            lines.append(f"Round {len(self.history) + 1} of {n}. Your total: {mine_total}.")
        past = []
        for pair in self.history:
            mine, theirs = pair[me], pair[1 - me]
            pts = self._points(*pair)[me]
            past.append(f"{self.labels[mine]}/{self.labels[theirs]} {_num(pts)}")
        lines.append("History (you/them, your points): " + (", ".join(past) if past else "none"))
        if not self.is_over():
            if player == "player_0" and self.pending is not None:
                # player_0's own choice, never shown to player_1 (see private_info)
                lines.append(f"Your choice this round: {self.labels[self.pending]} (waiting for the other player).")
            else:
                lines.append(f"Answer with {a} or {b}.")
        return "\n".join(lines)

    # ----- optional rules ---------------------------------------------------------------------
    def sample_moves(self, player: str) -> list[str]:
        moves = []
        for i, label in enumerate(self.labels):
            for text in (label, label.lower(), f"I choose {label}.", f"Option {label}"):
                # a configured label such as "Option" could clash with the phrase; keep only what parses back
                try:
                    if self.parse_move(text) == i:
                        moves.append(text)
                except IllegalMove:
                    pass
        return moves

    def private_info(self) -> dict[str, list[str]]:
        # Nothing is secret for long: the payoffs and history are common
        # knowledge. The only hidden fact is player_0's pending choice, and its
        # labels also appear in the public payoff table, so no text fragment
        # could be checked by substring; the tests instead compare player_1's
        # observation under both possible pending choices.
        return {}

    def reward_components(self) -> dict[str, float]:
        return {f"payoff/{p}": r for p, r in self.returns().items()}

    def outcome_label(self) -> str | None:
        r = self.returns()
        if r["player_0"] == r["player_1"]:
            return "draw"
        return f"{max(r, key=r.get)} wins"

    def metrics(self) -> dict[str, float]:
        h = self.history
        out: dict[str, float] = {"rounds_played": float(len(h))}
        if not h:
            return out
        n = len(h)
        totals = self.returns()
        out["mutual_coop_rate"] = sum(a0 == 0 and a1 == 0 for a0, a1 in h) / n
        out["coordination_rate"] = sum(a0 == a1 for a0, a1 in h) / n
        for me, p in enumerate(self.players):
            mine = [pair[me] for pair in h]
            theirs = [pair[1 - me] for pair in h]
            out[f"coop_rate/{p}"] = mine.count(0) / n
            out[f"mean_payoff/{p}"] = totals[p] / n
            provoked = [mine[t] == 1 for t in range(1, n) if theirs[t - 1] == 1]
            if provoked:
                out[f"retaliation/{p}"] = sum(provoked) / len(provoked)
            chances = [mine[t + 1] == 0 for t in range(1, n - 1) if mine[t] == 1 and theirs[t - 1] == 1 and theirs[t] == 0]
            if chances:
                out[f"forgiveness/{p}"] = sum(chances) / len(chances)
        return out


def _num(x: float) -> str:
    """Points as text: 8 rather than 8.0."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
