"""Every registered game passes the shared conformance checker."""

import pytest

from arena.registry import registered_games
from arena.testing import ConformanceError, check_game


@pytest.mark.parametrize("game_id", sorted(registered_games()))
def test_every_registered_game_conforms(game_id):
    report = check_game(game_id)
    assert report.checks == [
        "pettingzoo api_test",
        "random play to the end",
        "seeded determinism",
        "illegal-move rule",
        "private information",
    ]
    assert all(ep.turns for ep in report.episodes)


def test_checker_catches_a_leak(monkeypatch):
    # A deliberately broken copy of negotiation that shows the seller's cost to the buyer.
    from arena.environments.negotiation.rules import NegotiationGame
    from arena.registry import register

    class LeakyNegotiation(NegotiationGame):
        def observe_text(self, player):
            text = super().observe_text(player)
            if player == "buyer":
                text += "\n" + "\n".join(self.private_info().get("seller", []))
            return text

    register("leaky_negotiation-v0", LeakyNegotiation, override=True)
    with pytest.raises(ConformanceError, match="private to 'seller'"):
        check_game("leaky_negotiation-v0", api_cycles=50)


def test_checker_catches_nondeterminism():
    import os

    from arena.environments.repeated_matrix.rules import RepeatedMatrixGame
    from arena.registry import register

    class Unseeded(RepeatedMatrixGame):
        def observe_text(self, player):
            return super().observe_text(player) + f" [{os.urandom(2).hex()}]"

    register("unseeded_matrix-v0", Unseeded, override=True)
    with pytest.raises(ConformanceError, match="different episodes"):
        check_game("unseeded_matrix-v0", api_cycles=50)
