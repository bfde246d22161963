import math

from arena.records import Episode, Matchup, Turn


def _episode() -> Episode:
    m = Matchup(game="negotiation-v0", seed=7, seats={"seller": "main", "buyer": "scripted/fair_buyer"}, game_kwargs={"cost": 9})
    turns = [
        Turn(
            index=0,
            player="seller",
            policy_id="main",
            policy_version=3,
            observation="You sell. ünïcode $20\n",
            action="OFFER $18",
            prompt_ids=[1, 2, 3],
            completion_ids=[4, 5],
            logprobs=[-0.25, -1.0000001],
            start_ns=10,
            end_ns=20,
        ),
        Turn(index=1, player="buyer", policy_id="scripted/fair_buyer", observation="...", action="hmm", illegal_reason="no move found"),
    ]
    return Episode(
        episode_id="e1",
        matchup=m,
        turns=turns,
        returns={"seller": 0.5, "buyer": -1.0},
        group_return=-0.25,
        reward_components={"seller_share": 0.5},
        metrics={"deal": 1.0},
    )


def test_episode_json_round_trip_is_exact():
    ep = _episode()
    back = Episode.from_json(ep.to_json())
    assert back == ep
    assert back.turns[0].logprobs[1] == -1.0000001
    assert back.turns[1].illegal and not back.turns[0].illegal
    assert back.illegal_moves == 1 and back.length == 2


def test_records_reject_unknown_fields():
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="bogus"):
        Turn.model_validate({"index": 0, "player": "a", "policy_id": "p", "observation": "", "action": "", "bogus": 1})


def test_nan_free_metrics_serialise():
    ep = _episode()
    assert not any(math.isnan(v) for v in Episode.from_json(ep.to_json()).metrics.values())
