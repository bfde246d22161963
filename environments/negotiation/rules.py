"""Negotiation: a seller and a buyer bargain over one item (``negotiation-v0``).

Source: Fu et al., "Improving Language Model Negotiation with Self-Play and
In-Context Learning from AI Feedback" (2023); the same bargaining shape is Car
Dealer in LMRL-Gym. The published setting: the seller's cost is $8, the list
price is $20, the buyer is told to open at $10, and the game lasts at most 10
exchanges. The critic (AI-feedback) loop of the paper is not part of this file.

Roles
    ``seller`` owns the item and knows its private cost. ``buyer`` wants it; in
    the paper's setting it has no private number, only a suggested opening
    offer. With ``buyer_value`` set, the buyer also has a private value (the
    most the item is worth to it). ``first_mover`` (default ``seller``) speaks
    first; then the two alternate. Each side gets ``max_exchanges`` messages
    (one exchange = one seller message + one buyer message).

What each player sees (``observe_text``)
    Its role and the item, the list price, its own private number (seller: the
    cost; buyer: the value if any, and the suggested opening offer), the reward
    rule, the dialogue so far (both sides' moves and talk, talk truncated to
    ``max_talk_chars``), both standing offers, the messages left and the move
    syntax. Never the other side's private number. Lines bots can parse::

        Role: seller
        List price: $20
        [private] Your cost: $8                 (seller only)
        [private] Your value: $18               (buyer only, when it has one)
        Suggested opening offer: $10            (buyer only)
        Standing offer from seller: $20         (or: none)
        Standing offer from buyer: none
        Your messages left: 9 of 10
        Opponent messages left: 10
        Status: your turn                       (or: waiting / game over: ...)

    Talk is shown on one line inside quotes, with control characters and
    square brackets replaced, so one side's talk can never forge a moderator
    line or a ``[private]`` line in the other side's observation.

Moves
    A message is free text that must contain exactly one move (case-insensitive;
    the words ``offer``, ``accept`` and ``walk`` are reserved and count as moves
    wherever they stand as whole words):

    - ``OFFER $<price>``: also ``offer 12``, ``offer $12.50``, ``Offer: $1,200``.
      Replaces your standing offer. Prices are rounded to cents and must be
      greater than 0 and at most ``MAX_PRICE_FACTOR`` (100) times the list price.
    - ``ACCEPT``: accepts the opponent's latest standing offer; ends the game.
    - ``WALK``: walk away; ends the game with no deal.

    Everything else in the message is talk shown to the opponent. No move, two
    or more moves, a missing or bad price, or ACCEPT when the opponent has no
    standing offer is an illegal move: the base class records the reason,
    re-prompts the same player up to ``max_illegal_retries`` times, and one more
    illegal move forfeits (the game ends with no deal; the offender also gets
    ``forfeit_penalty``). ``apply`` raises nothing but ``IllegalMove``.

Moderator (rule-based)
    A deal is made exactly when a player ACCEPTs the opponent's standing offer;
    the price is that offer. The deal is valid when the price lies in
    [cost, list price] (with a buyer value: [cost, value]; the value is never
    above the list price). An accepted price outside that range is an invalid
    deal: it ends the game and scores like no deal. Running out of messages,
    WALK and forfeit are no deal. At the end both sides see the outcome.

Rewards (returned once, at the end; zero until then)
    Deal at price p:  seller (p - cost) / (list - cost);
                      buyer  (list - p) / (list - cost), or with a private
                      value v: (v - p) / (v - cost) (its own surplus, normalised
                      by the largest surplus it could get in a valid deal).
    No deal (walk, out of messages, invalid deal, forfeit): ``no_deal_penalty``
    (default 0) for both. A forfeit adds ``forfeit_penalty`` to the offender.
    Without a buyer value the game is constant-sum: a valid deal's rewards sum
    to 1.
    ``group_return``: the mean of the two returns (0.5 for any valid deal
    without a buyer value; the joint surplus in dollars is a metric).

Randomised private numbers (``randomize_private=True``)
    Per episode, from the rng given to ``setup``: cost uniform in
    [0.2, 0.6] x list price; when the buyer has a value, value uniform in
    [cost + 0.2 x (list - cost), list]. Both are rounded to whole dollars when
    the list price is at least $10 (to cents otherwise). The configured
    ``cost``/``buyer_value`` are then ignored (``buyer_value`` only switches the
    value on).

Metrics
    ``deal`` (1 for a valid deal), ``price`` (the deal price; NaN without a
    valid deal, ``deal`` tells), ``turns_to_deal`` (messages up to and including
    the ACCEPT; NaN without a valid deal), ``invalid_deal``, ``walked``,
    ``timed_out``, ``messages``, ``joint_surplus`` (dollars: value or list price
    minus cost, for a valid deal; else 0), ``cost`` and ``buyer_value`` (NaN
    without one). Reward components: ``seller_share``, ``buyer_share`` (0
    without a valid deal) and ``no_deal_penalty`` (applied to each side).

Version history
    v0: first version: offer / accept / walk, rule-based moderator, optional
        buyer value, randomised private numbers.
"""

from __future__ import annotations

import math
import re
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from arena.game import GameConfig, IllegalMove, TextGame, clean_text

#: an offer above this many times the list price is rejected as absurd (a typo or junk)
MAX_PRICE_FACTOR = 100.0
#: randomised cost, as fractions of the list price
COST_RANGE = (0.2, 0.6)
#: randomised value starts this fraction of (list - cost) above the cost, so a deal is always possible
VALUE_MIN_MARGIN = 0.2

_MOVE_WORD = re.compile(r"\b(offer|accept|walk)\b", re.IGNORECASE)
# After the OFFER keyword: optional ':', '=', 'of', 'at', then the price. A leading '-' is
# captured only to give a clear "must be positive" reason.
_PRICE = re.compile(
    r"\s*[:=]?\s*(?:(?:of|at)\s+)?(-?)\s*\$?\s*(-?)([0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?|\.[0-9]+)(?![0-9A-Za-z_])",
    re.IGNORECASE,
)


def money(x: float) -> str:
    """``12`` -> ``$12``, ``12.5`` -> ``$12.50``."""
    x = round(float(x), 2)
    return f"${x:.0f}" if x == int(x) else f"${x:.2f}"


def parse_move(text: str, max_price: float) -> tuple[str, float | None, str]:
    """Parse one message into ``(move, price, talk)``; raise IllegalMove when malformed.

    ``move`` is ``"offer"``, ``"accept"`` or ``"walk"``; ``price`` is set for offers
    (rounded to cents); ``talk`` is the raw message with the move removed.
    """
    found = list(_MOVE_WORD.finditer(text))
    if not found:
        raise IllegalMove("no move found: write exactly one of OFFER $<price>, ACCEPT or WALK")
    if len(found) > 1:
        names = ", ".join(m.group(1).upper() for m in found[:5]) + (", ..." if len(found) > 5 else "")
        raise IllegalMove(f"found {len(found)} moves ({names}); a message must contain exactly one of OFFER, ACCEPT, WALK")
    m = found[0]
    move = m.group(1).lower()
    start, end = m.span()
    price = None
    if move == "offer":
        p = _PRICE.match(text, end)
        if p is None:
            raise IllegalMove("OFFER must be followed by a price, e.g. OFFER $12")
        if p.group(1) or p.group(2):
            raise IllegalMove("the price must be positive")
        price = float(p.group(3).replace(",", ""))
        if not math.isfinite(price) or price > max_price:
            raise IllegalMove(f"the price is absurdly large (the most allowed is {money(max_price)})")
        price = round(price, 2)
        if price <= 0:
            raise IllegalMove("the price must be at least $0.01")
        end = p.end()
    talk = text[:start] + " " + text[end:]
    return move, price, talk


class NegotiationGame(TextGame):
    """Seller and buyer bargain over one item; see the module docstring."""

    players: ClassVar[tuple[str, ...]] = ("seller", "buyer")
    metadata: ClassVar[dict] = {"name": "negotiation_v0", "render_modes": ["human", "ansi"], "is_parallelizable": False}
    description: ClassVar[str] = "Seller and buyer bargain over one item with private cost and value; offer / accept / walk moves in free text."

    class Config(GameConfig):
        cost: float = Field(8.0, ge=0, description="seller's private cost (published default 8)")
        list_price: float = Field(20.0, gt=0, description="list price, public (published default 20)")
        buyer_opening: float = Field(10.0, gt=0, description="suggested opening offer shown to the buyer (published default 10)")
        max_exchanges: int = Field(10, ge=1, le=1000, description="turn limit: each side gets this many messages (published default 10)")
        buyer_value: float | None = Field(None, description="buyer's private value; None = the paper's setting without one")
        randomize_private: bool = Field(False, description="draw cost (and value, if used) per episode from the setup rng; see module docstring")
        no_deal_penalty: float = Field(0.0, description="return of both sides when there is no valid deal")
        first_mover: Literal["seller", "buyer"] = Field("seller", description="who sends the first message")
        max_talk_chars: int = Field(200, ge=0, le=10_000, description="talk longer than this is truncated when shown to the other side")

        @model_validator(mode="after")
        def _check(self) -> NegotiationGame.Config:
            if not self.cost < self.list_price:
                raise ValueError(f"cost ({self.cost}) must be below list_price ({self.list_price})")
            if self.buyer_opening > self.list_price:
                raise ValueError(f"buyer_opening ({self.buyer_opening}) must not exceed list_price ({self.list_price})")
            if self.buyer_value is not None and not self.cost < self.buyer_value <= self.list_price:
                raise ValueError(
                    f"buyer_value ({self.buyer_value}) must be above cost ({self.cost}) and at most list_price ({self.list_price}), so a valid deal exists"
                )
            return self

    config: Config

    # ----- rules -------------------------------------------------------------------------------
    def setup(self, rng: np.random.Generator) -> None:
        c = self.config
        self.list_price = float(c.list_price)
        self.cost = float(c.cost)
        self.value: float | None = None if c.buyer_value is None else float(c.buyer_value)
        if c.randomize_private:
            self.cost = self._draw(rng, COST_RANGE[0] * self.list_price, COST_RANGE[1] * self.list_price)
            if self.value is not None:
                lo = self.cost + VALUE_MIN_MARGIN * (self.list_price - self.cost)
                self.value = self._draw(rng, lo, self.list_price)
        self.max_price = MAX_PRICE_FACTOR * self.list_price
        self.dialogue: list[tuple[str, str, str]] = []  # (player, move as text, cleaned talk)
        self.standing: dict[str, float | None] = {p: None for p in self.players}
        self.sent: dict[str, int] = {p: 0 for p in self.players}
        self.outcome: str | None = None  # deal | invalid_deal | walk | timeout | forfeit
        self.outcome_by: str | None = None
        self.price: float | None = None
        self._turn = c.first_mover

    def _draw(self, rng: np.random.Generator, lo: float, hi: float) -> float:
        x = float(rng.uniform(lo, hi))
        if self.list_price >= 10:
            x = float(min(max(round(x), math.ceil(lo)), math.floor(hi)))
        return round(x, 2)

    def to_move(self) -> str:
        return self._turn

    def _other(self, player: str) -> str:
        return "buyer" if player == "seller" else "seller"

    def apply(self, player: str, action: str) -> None:
        try:
            move, price, talk = parse_move(action, self.max_price)
        except IllegalMove:
            raise
        except Exception as e:  # a parser bug must not crash an episode
            raise IllegalMove(f"could not read the message ({type(e).__name__})") from None
        other = self._other(player)
        if move == "accept" and self.standing[other] is None:
            raise IllegalMove(f"ACCEPT needs a standing offer from the {other}, and there is none yet")
        shown = clean_text(talk, self.config.max_talk_chars)
        self.sent[player] += 1
        if move == "offer":
            self.standing[player] = price
            self.dialogue.append((player, f"OFFER {money(price)}", shown))
        elif move == "accept":
            p = self.standing[other]
            self.dialogue.append((player, f"ACCEPT {money(p)}", shown))
            self.price = p
            self.outcome = "deal" if self._valid_price(p) else "invalid_deal"
            self.outcome_by = player
        else:
            self.dialogue.append((player, "WALK", shown))
            self.outcome, self.outcome_by = "walk", player
        if self.outcome is None and len(self.dialogue) >= 2 * self.config.max_exchanges:
            self.outcome = "timeout"
        self._turn = other

    def forfeit(self, player: str, reason: str) -> None:
        super().forfeit(player, reason)
        self.outcome, self.outcome_by = "forfeit", player

    def _valid_price(self, p: float) -> bool:
        top = self.list_price if self.value is None else self.value
        return self.cost <= p <= top

    def is_over(self) -> bool:
        return self.outcome is not None

    def _shares(self) -> tuple[float, float]:
        if self.outcome != "deal":
            return 0.0, 0.0
        p = self.price
        seller = (p - self.cost) / (self.list_price - self.cost)
        if self.value is None:
            buyer = (self.list_price - p) / (self.list_price - self.cost)
        else:
            buyer = (self.value - p) / (self.value - self.cost)
        return float(seller), float(buyer)

    def returns(self) -> dict[str, float]:
        if self.outcome is None:
            return {"seller": 0.0, "buyer": 0.0}
        seller, buyer = self._shares()
        pen = 0.0 if self.outcome == "deal" else self.config.no_deal_penalty
        return {"seller": seller + pen, "buyer": buyer + pen}

    def reward_components(self) -> dict[str, float]:
        seller, buyer = self._shares()
        pen = self.config.no_deal_penalty if self.outcome is not None and self.outcome != "deal" else 0.0
        return {"seller_share": seller, "buyer_share": buyer, "no_deal_penalty": pen}

    def group_return(self) -> float:
        """The mean of the two returns (forfeit penalty included)."""
        return super().group_return()

    def outcome_label(self) -> str | None:
        return self.outcome

    def metrics(self) -> dict[str, float]:
        deal = self.outcome == "deal"
        nan = float("nan")
        top = self.list_price if self.value is None else self.value
        return {
            "deal": float(deal),
            "price": float(self.price) if deal else nan,
            "turns_to_deal": float(len(self.dialogue)) if deal else nan,
            "invalid_deal": float(self.outcome == "invalid_deal"),
            "walked": float(self.outcome == "walk"),
            "timed_out": float(self.outcome == "timeout"),
            "messages": float(len(self.dialogue)),
            "joint_surplus": float(top - self.cost) if deal else 0.0,
            "cost": self.cost,
            "buyer_value": nan if self.value is None else self.value,
        }

    def sample_moves(self, player: str) -> list[str]:
        if self.outcome is not None or player != self._turn:
            return []
        lp, other = self.list_price, self._other(player)
        if player == "seller":
            lo = self.cost
            offers = [lp, (lp + lo) / 2, lo + 0.25 * (lp - lo)]
        else:
            # only public numbers (and its own value): the buyer's moves must not depend on the cost
            hi = lp if self.value is None else self.value
            lo = min(self.config.buyer_opening, hi)
            offers = [lo, (lo + hi) / 2, hi]
        moves = [f"OFFER {money(round(x, 2))}" for x in offers if x > 0]
        if self.standing[other] is not None:
            moves.append("ACCEPT")
        moves.append("WALK")
        return list(dict.fromkeys(moves))

    def private_info(self) -> dict[str, list[str]]:
        info = {"seller": [self._cost_line()]}
        if self.value is not None:
            info["buyer"] = [self._value_line()]
        return info

    # ----- observation -------------------------------------------------------------------------
    def _cost_line(self) -> str:
        return f"[private] Your cost: {money(self.cost)}"

    def _value_line(self) -> str:
        return f"[private] Your value: {money(self.value)}"

    def observe_text(self, player: str) -> str:
        c, other = self.config, self._other(player)
        nd = f"{c.no_deal_penalty:g}"
        lines = [f"Role: {player}"]
        if player == "seller":
            lines += [
                "You are the seller of one item, bargaining with a buyer.",
                f"List price: {money(self.list_price)}",
                f"{self._cost_line()} (the buyer does not know it)",
                f"Your reward on a deal: (price - cost) / (list price - cost). A deal below your cost is invalid. No deal or an invalid deal: {nd}.",
            ]
        else:
            lines += [
                "You are the buyer of one item, bargaining with a seller.",
                f"List price: {money(self.list_price)}",
            ]
            if self.value is None:
                lines.append(
                    "Your reward on a deal: (list price - price) / (list price - seller's cost); the cost is secret. "
                    f"Paying more than the list price is an invalid deal. No deal or an invalid deal: {nd}."
                )
            else:
                lines += [
                    f"{self._value_line()} (the seller does not know it)",
                    "Your reward on a deal: (value - price) / (value - seller's cost); the cost is secret. "
                    f"Paying more than your value is an invalid deal. No deal or an invalid deal: {nd}.",
                ]
            lines.append(f"Suggested opening offer: {money(c.buyer_opening)}")
        if self.dialogue:
            lines.append("Dialogue so far:")
            for i, (who, move, talk) in enumerate(self.dialogue, 1):
                lines.append(f"  {i}. {who}: {move}" + (f' | "{talk}"' if talk else ""))
        else:
            lines.append("Dialogue so far: (none)")
        for who in self.players:
            s = self.standing[who]
            lines.append(f"Standing offer from {who}: {'none' if s is None else money(s)}")
        lines.append(f"Your messages left: {c.max_exchanges - self.sent[player]} of {c.max_exchanges}")
        lines.append(f"Opponent messages left: {c.max_exchanges - self.sent[other]}")
        if self.outcome is not None:
            lines.append(f"Status: game over: {self._outcome_text()}")
        elif player == self._turn:
            lines.append("Status: your turn")
            lines.append(
                "Write one message with exactly one move: OFFER $<price> (your new offer), "
                f"ACCEPT (take the {other}'s standing offer) or WALK (leave, no deal). "
                f"Other words are talk shown to the {other} (up to {c.max_talk_chars} characters); "
                "the words offer, accept and walk always count as moves."
            )
        else:
            lines.append(f"Status: waiting for the {other}")
        return "\n".join(lines)

    def _outcome_text(self) -> str:
        o, by = self.outcome, self.outcome_by
        if o == "deal":
            return f"deal at {money(self.price)} (the {by} accepted)"
        if o == "invalid_deal":
            return f"invalid deal at {money(self.price)} (outside the valid price range), scored as no deal"
        if o == "walk":
            return f"no deal (the {by} walked away)"
        if o == "timeout":
            return "no deal (out of messages)"
        return f"no deal (the {by} forfeited after repeated illegal moves)"
