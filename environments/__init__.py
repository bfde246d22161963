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
register(
    "debate-v0",
    "arena.environments.debate:DebateGame",
    description="Two debaters answer a question with confidence and reasons, then debate; an oracle or a model judge decides.",
)
register(
    "collab_qa-v0",
    "arena.environments.collab_qa:CollabQAGame",
    description="An asker and helpers with different search tools answer a question together; shared reward F1 minus search cost.",
)
register(
    "social_deduction-v0",
    "arena.environments.social_deduction:SocialDeductionGame",
    description="Among-Us-like social deduction: a crew does tasks on a grid of rooms, one impostor kills; simultaneous moves, discussion after a body is reported, then a secret vote.",
)
