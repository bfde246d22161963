"""Episodes logged as MLflow traces read back with the same turns."""

import asyncio

import mlflow

from arena.agents.catalog import make_fixed_policy
from arena.records import Matchup
from arena.rollout import play_episode
from arena.tracking import episode_from_trace, episodes_from_run, flush_traces, log_episode_trace, tracking_uri


def _episodes():
    out = []
    for game, seats in [
        ("negotiation-v0", {"seller": "scripted/fair_seller", "buyer": "random"}),
        ("repeated_matrix-v0", {"player_0": "scripted/tit_for_tat", "player_1": "random"}),
    ]:
        pool = {pid: make_fixed_policy(pid, game) for pid in seats.values()}
        ep = asyncio.run(play_episode(Matchup(game=game, seed=5, seats=seats), pool, episode_id=f"t-{game}"))
        # token fields as an LLM turn carries them, to check they survive the store exactly
        ep.turns[0].prompt_ids, ep.turns[0].completion_ids, ep.turns[0].logprobs = [5, 6, 7], [8, 9], [-0.125, -3.3333333333]
        out.append(ep)
    return out


def test_trace_round_trip_through_search_traces(mlflow_store):
    assert tracking_uri() == mlflow_store
    mlflow.set_tracking_uri(mlflow_store)
    mlflow.set_experiment("roundtrip")
    episodes = _episodes()
    with mlflow.start_run() as run:
        ids = [log_episode_trace(ep) for ep in episodes]
    flush_traces()
    traces = mlflow.search_traces(run_id=run.info.run_id, return_type="list")
    assert sorted(t.info.trace_id for t in traces) == sorted(ids)
    by_id = {ep.episode_id: ep for ep in map(episode_from_trace, traces)}
    for ep in episodes:
        back = by_id[ep.episode_id]
        assert back.turns == ep.turns  # every field of every turn, in order
        assert back.matchup == ep.matchup
        assert back.returns == ep.returns and back.group_return == ep.group_return
        assert back.reward_components == ep.reward_components and back.metrics == ep.metrics
    read = episodes_from_run(run.info.run_id)
    assert sorted(e.episode_id for e in read) == sorted(e.episode_id for e in episodes)
    assert all(e.turns == by_id[e.episode_id].turns for e in read)


def test_trace_spans_show_turns_in_the_ui_shape(mlflow_store):
    mlflow.set_tracking_uri(mlflow_store)
    mlflow.set_experiment("ui-shape")
    ep = _episodes()[0]
    with mlflow.start_run() as run:
        log_episode_trace(ep)
    flush_traces()
    (trace,) = mlflow.search_traces(run_id=run.info.run_id, return_type="list")
    root = [s for s in trace.data.spans if s.parent_id is None][0]
    children = [s for s in trace.data.spans if s.parent_id == root.span_id]
    assert len(children) == len(ep.turns)
    assert root.outputs["returns"] == ep.returns
    first = min(children, key=lambda s: s.attributes["arena.turn"])
    assert first.inputs == {"observation": ep.turns[0].observation}
    assert first.outputs == {"action": ep.turns[0].action}
    assert first.attributes["arena.player"] == ep.turns[0].player


def test_a_fault_found_on_another_thread_is_logged_to_the_run(mlflow_store):
    """MLflow's active run is per thread: a fault a Ray runtime finds off the run's thread names the run."""
    import json
    import threading

    import mlflow
    from mlflow.tracking import MlflowClient

    from arena.tracking import log_fault

    event = {"kind": "engine_died", "target": "lora/engine_1", "step": 1}
    with mlflow.start_run() as active:
        lost = threading.Thread(target=log_fault, args=(event, [event]))  # no run on that thread: nothing
        lost.start()
        lost.join()
        assert "faults/total" not in MlflowClient().get_run(active.info.run_id).data.metrics
        found = threading.Thread(target=log_fault, args=(event, [event]), kwargs={"run_id": active.info.run_id})
        found.start()
        found.join()
    client = MlflowClient()
    assert client.get_run(active.info.run_id).data.metrics["faults/engine_died"] == 1.0
    text = mlflow.artifacts.load_text(f"runs:/{active.info.run_id}/faults.jsonl")
    assert [json.loads(line) for line in text.splitlines()] == [event]
