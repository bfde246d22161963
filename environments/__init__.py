"""The games Arena ships. Importing this package registers them."""

from arena.registry import register

register(
    "repeated_matrix-v0",
    "arena.environments.repeated_matrix:RepeatedMatrixGame",
    description="Repeated 2x2 games (Prisoner's Dilemma, Battle of the Sexes, Stag Hunt, Chicken) with hidden simultaneous moves.",
)
register(
    "negotiation-v0",
    "arena.environments.negotiation:NegotiationGame",
    description="Seller and buyer bargain over one item with private cost and value; offer / accept / walk moves in free text.",
)
