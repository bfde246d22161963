"""Scripted bots for ``negotiation-v0``: baselines, demonstrations and fixed opponents.

Every bot reads only ``view.observation`` (the machine-readable lines the game
prints: ``Role:``, ``List price:``, ``[private] Your cost:``, ``Standing offer
from ...:``, ``Your messages left:`` ...) and draws any randomness from
``view.rng``, so a game replays exactly from its seed.

Concession bots (:class:`ConcessionBot`) follow a time-dependent schedule: they
open at a start price and move toward a target over their messages,
``price(t) = start + (target - start) * t**beta`` with ``t`` going from 0 on the
first message to 1 on the last. ``beta = 1`` concedes evenly (fair); a large
``beta`` holds out and concedes late (hard, "Boulware"). They never retract a
concession.

- seller: start = list price; target (floor) = cost + floor_frac * (list - cost).
- buyer: start = the suggested opening (capped at its limit); target (ceiling)
  = start + ceil_frac * (limit - start), where limit is its private value or,
  without one, the list price (paying more is an invalid deal).

Accepting: a bot accepts the opponent's standing offer as soon as it is at
least as good as the offer it would make now. On its last message it accepts
anything not worse than its last-resort threshold (fair bots: any valid deal,
since a valid deal scores at least as well as none; hard bots: only their
target). When it cannot accept on its last message and the opponent has no
message left to answer with, it walks away (no deal either way, but said
openly); otherwise it makes its scheduled offer.

A bot built as a seller plays the same style if seated as the buyer (and vice
versa): the role comes from the observation. ``random`` plays random offers,
ACCEPT or WALK and suits either seat.
"""

from __future__ import annotations

import re

from arena.agents.base import PlayerView, ScriptedPolicy

_NUM = r"\$([0-9]+(?:\.[0-9]+)?)"
_ROLE = re.compile(r"^Role: (seller|buyer)\s*$", re.M)
_LIST = re.compile(rf"^List price: {_NUM}", re.M)
_COST = re.compile(rf"^\[private\] Your cost: {_NUM}", re.M)
_VALUE = re.compile(rf"^\[private\] Your value: {_NUM}", re.M)
_OPENING = re.compile(rf"^Suggested opening offer: {_NUM}", re.M)
_STANDING = re.compile(rf"^Standing offer from (seller|buyer): (?:{_NUM}|none)", re.M)
_LEFT = re.compile(r"^Your messages left: ([0-9]+) of ([0-9]+)", re.M)
_OPP_LEFT = re.compile(r"^Opponent messages left: ([0-9]+)", re.M)

# Talk must avoid the reserved words offer / accept / walk (each counts as a move).
_TALK = {
    "seller": ["It is in great condition.", "That is a fair price for this.", "I can come down a little.", ""],
    "buyer": ["That is more than I hoped to pay.", "Can you do a bit better?", "I am on a budget.", ""],
}


def _money(x: float) -> str:
    x = round(float(x), 2)
    return f"${x:.0f}" if x == int(x) else f"${x:.2f}"


def read_state(obs: str, player: str = "seller") -> dict:
    """The numbers a bot needs, parsed from the observation's fixed lines (None where absent)."""

    def num(rx: re.Pattern) -> float | None:
        m = rx.search(obs)
        return float(m.group(1)) if m else None

    m = _ROLE.search(obs)
    role = m.group(1) if m else player
    standing = {"seller": None, "buyer": None}
    for who, price in _STANDING.findall(obs):
        standing[who] = float(price) if price else None
    left = _LEFT.search(obs)
    opp = _OPP_LEFT.search(obs)
    return {
        "role": role,
        "list_price": num(_LIST),
        "cost": num(_COST),
        "value": num(_VALUE),
        "opening": num(_OPENING),
        "mine": standing[role],
        "theirs": standing["buyer" if role == "seller" else "seller"],
        "left": int(left.group(1)) if left else 1,
        "total": int(left.group(2)) if left else 1,
        "opp_left": int(opp.group(1)) if opp else 0,
    }


class ConcessionBot(ScriptedPolicy):
    """Time-dependent concession with an acceptance threshold; see the module docstring."""

    policy_id = "scripted/concession"
    floor_frac: float = 0.3  # seller's target, as a fraction of (list - cost) above cost
    ceil_frac: float = 0.7  # buyer's target, as a fraction of (limit - opening) above opening
    beta: float = 1.0
    last_resort_any_valid: bool = True
    noise: float = 0.02  # offer noise, as a fraction of the bargaining range

    def choose(self, view: PlayerView) -> str:
        s = read_state(view.observation, view.player)
        lp = s["list_price"]
        if lp is None:
            return "WALK"  # not a negotiation observation we can read
        seller = s["role"] == "seller"
        if seller:
            reserve = s["cost"] if s["cost"] is not None else 0.0
            start, target = lp, reserve + self.floor_frac * (lp - reserve)
        else:
            reserve = s["value"] if s["value"] is not None else lp
            start = min(s["opening"] if s["opening"] is not None else lp / 2, reserve)
            target = start + self.ceil_frac * (reserve - start)
        k, n = s["total"] - s["left"], s["total"]
        t = 1.0 if n <= 1 else min(k / (n - 1), 1.0)
        planned = start + (target - start) * t**self.beta
        planned += self.noise * abs(start - target) * float(view.rng.uniform(-1, 1))
        lo, hi = min(start, target), max(start, target)
        planned = min(max(planned, lo), hi)
        if s["mine"] is not None:  # never retract a concession
            planned = min(planned, s["mine"]) if seller else max(planned, s["mine"])
        step = 0.5 if lp >= 10 else 0.01
        planned = round(round(planned / step) * step, 2)

        theirs = s["theirs"]
        last = s["left"] <= 1
        if theirs is not None:

            def no_worse_than(x: float) -> bool:
                return theirs >= x if seller else theirs <= x

            if no_worse_than(planned) and no_worse_than(reserve):
                return "ACCEPT"
            if last and no_worse_than(reserve if self.last_resort_any_valid else target):
                return "Fine, ACCEPT."
        if last and s["opp_left"] == 0:
            return "We are too far apart. WALK"
        talk = _TALK["seller" if seller else "buyer"][int(view.rng.integers(4))]
        return f"{talk} OFFER {_money(planned)}".strip()


class FairSeller(ConcessionBot):
    """Opens at list, concedes evenly to cost + 30% of the range; takes any valid deal at the end."""

    policy_id = "scripted/fair_seller"


class HardSeller(ConcessionBot):
    """Opens at list, holds out (beta 3) toward cost + 50%; at the end takes only its floor."""

    policy_id = "scripted/hard_seller"
    floor_frac = 0.5
    beta = 3.0
    last_resort_any_valid = False


class FairBuyer(ConcessionBot):
    """Opens at the suggested opening, concedes evenly to 70% of the way to its limit."""

    policy_id = "scripted/fair_buyer"


class HardBuyer(ConcessionBot):
    """Opens at the suggested opening, holds out (beta 3) toward 40% of the way to its limit."""

    policy_id = "scripted/hard_buyer"
    ceil_frac = 0.4
    beta = 3.0
    last_resort_any_valid = False


class RandomNegotiator(ScriptedPolicy):
    """Random legal-looking moves: ACCEPT (20% when there is an offer), WALK (5%),
    otherwise an offer uniform in [25%, 100%] of the list price."""

    policy_id = "scripted/random"

    def choose(self, view: PlayerView) -> str:
        s = read_state(view.observation, view.player)
        lp = s["list_price"] or 20.0
        u = float(view.rng.uniform())
        if s["theirs"] is not None and u < 0.2:
            return "ACCEPT"
        if u > 0.95:
            return "WALK"
        return f"OFFER {_money(float(view.rng.uniform(0.25, 1.0)) * lp)}"


# ----- the critic loop (Fu et al. 2023): coaching between games, never naming a price ----------------
_TIP_FIRM = ("hold firm", "open higher", "open lower", "smaller steps")
_TIP_CLOSE = ("keep the deal alive", "do not walk")


def coaching(obs: str) -> tuple[int, int]:
    """How often the feedback in a prompt asked to hold firm, and to close the deal (counts of tip lines)."""
    lines = [ln.lower() for ln in obs.splitlines() if ln.lstrip().startswith("- ")]
    firm = sum(any(t in ln for t in _TIP_FIRM) for ln in lines)
    close = sum(any(t in ln for t in _TIP_CLOSE) for ln in lines)
    return firm, close


class CoachableSeller(ConcessionBot):
    """A fair seller that follows coaching read from its prompt: each "hold firm" tip raises its
    floor and makes it concede later; each "keep the deal alive" tip softens both. Without
    feedback it plays exactly like ``fair_seller``. It shows what the critic loop can do for a
    side that listens; whether a model listens is what the loop measures."""

    policy_id = "scripted/coachable_seller"

    def choose(self, view: PlayerView) -> str:
        firm, close = coaching(view.observation)
        self.floor_frac = min(max(0.3 + 0.1 * firm - 0.05 * close, 0.05), 0.8)
        self.beta = min(max(1.0 + 0.75 * firm - 0.25 * close, 0.5), 6.0)
        return super().choose(view)


class NegotiationCritic(ScriptedPolicy):
    """Reads a finished game (the critic prompt's ``Coached role:``, ``Metrics:`` and ``Coached
    side's return:`` lines, see :func:`arena.critic_loop.critic_prompt`) and gives the coached side
    up to three suggestions, never a price."""

    policy_id = "scripted/critic"

    def choose(self, view: PlayerView) -> str:
        obs = view.observation
        role = re.search(r"^Coached role: (\w+)", obs, re.M)
        seller = role is None or role.group(1) == "seller"
        line = re.search(r"^Metrics: (.*)$", obs, re.M)
        metrics = {k: float(v) for k, v in re.findall(r"([\w/]+)=([^,\s]+)", line.group(1))} if line else {}
        share = re.search(r"^Coached side's return: (-?[0-9.]+)", obs, re.M)
        if metrics.get("invalid_deal"):
            return "- Never agree to a price outside the valid range; it scores as no deal."
        if not metrics.get("deal"):
            return "- Do not walk away early; keep the deal alive with a small concession near the end.\n- Answer every offer with a counter-offer."
        if share is not None and float(share.group(1)) >= 0.7:
            return "- Good result: keep the same approach and hold firm again."
        first = "- Open higher and hold firm longer before conceding." if seller else "- Open lower and hold firm longer before conceding."
        return first + "\n- Concede in smaller steps.\n- Remind the other side of the item's value."


BOTS: dict[str, type[ScriptedPolicy]] = {
    "fair_seller": FairSeller,
    "hard_seller": HardSeller,
    "fair_buyer": FairBuyer,
    "hard_buyer": HardBuyer,
    "random": RandomNegotiator,
    "coachable_seller": CoachableSeller,
}
SELLER_BOTS: list[str] = ["fair_seller", "hard_seller", "random"]
BUYER_BOTS: list[str] = ["fair_buyer", "hard_buyer", "random"]
CRITICS: dict[str, type[ScriptedPolicy]] = {"critic": NegotiationCritic}
