"""``negotiation-v0``: bargaining over one item with private cost and value (rules in :mod:`.rules`)."""

import itertools

from arena.environments.negotiation.bots import BOTS, CRITICS
from arena.environments.negotiation.critic import cut_numbers
from arena.environments.negotiation.rules import NegotiationGame
from arena.registry import register

#: how many times each demonstration seating is listed: a matrix turn is one letter, a negotiation
#: turn a sentence and a price, so without repeats a run of both games would see ~10x more matrix turns
DEMO_REPEATS = 6

register(
    "negotiation-v0",
    NegotiationGame,
    description="Seller and buyer bargain over one item with private cost and value; offer / accept / walk moves in free text.",
    bots=BOTS,
    critics=CRITICS,
    feedback_filter=cut_numbers,  # the critic's feedback never names a price
    demonstrations=[{"seller": f"scripted/{s}_seller", "buyer": f"scripted/{b}_buyer"} for s, b in itertools.product(("fair", "hard"), repeat=2)]
    * DEMO_REPEATS,
    corpus_bots=("fair_seller", "hard_seller", "fair_buyer", "hard_buyer", "random"),
)

__all__ = ["BOTS", "CRITICS", "NegotiationGame"]
