"""MLflow: one run per experiment, metrics per round, one trace per sampled episode.

An episode becomes a trace whose root span holds the matchup and the outcome
(returns, group return, reward components, metrics) and whose child spans are
its turns, in order (player, policy id and version, observation in, action
out, illegal-move reason, and the token ids and sampler logprobs). The MLflow
UI shows an episode turn by turn; :func:`episodes_from_run` reads them back
into :class:`~arena.records.Episode` objects.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from arena.records import Episode, Matchup, Turn

DEFAULT_DB = "mlflow.db"


def tracking_uri(uri: str | None = None) -> str:
    """The store to use: explicit, else ``$MLFLOW_TRACKING_URI``, else SQLite in the working directory."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def quiet_mlflow() -> None:
    # The SQLite store announces table creation and migrations at INFO on first use.
    for name in ("mlflow.store.db.utils", "mlflow.tracking.fluent", "alembic", "mlflow.tracing.export.async_export_queue"):
        logging.getLogger(name).setLevel(logging.WARNING)


def log_episode_trace(ep: Episode) -> str:
    """Log one episode as a trace in the active run; returns the trace id."""
    import mlflow

    start = min((t.start_ns for t in ep.turns if t.start_ns), default=None)
    end = max((t.end_ns for t in ep.turns if t.end_ns), default=None)
    root = mlflow.start_span_no_context(
        name=f"episode {ep.episode_id}",
        span_type="CHAIN",
        inputs={"matchup": ep.matchup.model_dump(mode="json")},
        attributes={
            "arena.episode_id": ep.episode_id,
            "arena.game": ep.matchup.game,
            "arena.truncated": ep.truncated,
        },
        start_time_ns=start,
    )
    for t in ep.turns:
        span = mlflow.start_span_no_context(
            name=f"{t.index}: {t.player}",
            span_type="AGENT",
            parent_span=root,
            inputs={"observation": t.observation},
            attributes={
                "arena.turn": t.index,
                "arena.player": t.player,
                "arena.policy_id": t.policy_id,
                "arena.policy_version": t.policy_version,
                "arena.illegal": t.illegal,
                "arena.illegal_reason": t.illegal_reason or "",
                "arena.reward": t.reward,
                "arena.prompt_ids": t.prompt_ids,
                "arena.completion_ids": t.completion_ids,
                "arena.logprobs": t.logprobs,
            },
            start_time_ns=t.start_ns or None,
        )
        span.end(outputs={"action": t.action}, end_time_ns=max(t.end_ns, t.start_ns) or None)
    root.end(
        outputs={
            "returns": ep.returns,
            "group_return": ep.group_return,
            "reward_components": ep.reward_components,
            "metrics": ep.metrics,
        },
        end_time_ns=end,
    )
    return root.trace_id


def flush_traces() -> None:
    import mlflow

    flush = getattr(mlflow, "flush_trace_async_logging", None)
    if flush is not None:
        flush()


def episode_from_trace(trace: Any) -> Episode:
    """Rebuild an Episode from a trace written by :func:`log_episode_trace`."""
    spans = list(trace.data.spans)
    roots = [s for s in spans if s.parent_id is None]
    if len(roots) != 1 or "arena.episode_id" not in (roots[0].attributes or {}):
        raise ValueError(f"trace {trace.info.trace_id} is not an Arena episode")
    root = roots[0]
    turns = []
    for s in spans:
        a = s.attributes or {}
        if s.parent_id != root.span_id or "arena.turn" not in a:
            continue
        turns.append(
            Turn(
                index=int(a["arena.turn"]),
                player=a["arena.player"],
                policy_id=a["arena.policy_id"],
                policy_version=int(a["arena.policy_version"]),
                observation=(s.inputs or {}).get("observation", ""),
                action=(s.outputs or {}).get("action", ""),
                prompt_ids=list(a.get("arena.prompt_ids") or []),
                completion_ids=list(a.get("arena.completion_ids") or []),
                logprobs=list(a.get("arena.logprobs") or []),
                illegal_reason=a.get("arena.illegal_reason") or None,
                reward=float(a.get("arena.reward", 0.0)),
                start_ns=int(s.start_time_ns or 0),
                end_ns=int(s.end_time_ns or 0),
            )
        )
    turns.sort(key=lambda t: t.index)
    out = root.outputs or {}
    return Episode(
        episode_id=root.attributes["arena.episode_id"],
        matchup=Matchup.model_validate((root.inputs or {})["matchup"]),
        turns=turns,
        returns=out.get("returns", {}),
        group_return=out.get("group_return", 0.0),
        reward_components=out.get("reward_components", {}),
        metrics=out.get("metrics", {}),
        truncated=bool(root.attributes.get("arena.truncated", False)),
    )


def episodes_from_run(run_id: str, uri: str | None = None, max_results: int | None = None) -> list[Episode]:
    """Every episode trace logged in a run, oldest first."""
    import mlflow

    quiet_mlflow()
    mlflow.set_tracking_uri(tracking_uri(uri))
    run = mlflow.get_run(run_id)  # raises a clear MlflowException for an unknown id
    traces = mlflow.search_traces(
        locations=[run.info.experiment_id],
        run_id=run_id,
        return_type="list",
        max_results=max_results,
        order_by=["timestamp_ms ASC"],
    )
    return [episode_from_trace(t) for t in traces]


def log_episodes_artifact(episodes: Iterable[Episode], name: str) -> None:
    """All episodes of a round as JSON lines, so nothing played is lost even when only a sample is traced."""
    import mlflow

    text = "".join(ep.to_json() + "\n" for ep in episodes)
    mlflow.log_text(text, name)


def log_fault(event: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """Log a fault of a distributed run (a dead rollout worker or engine, and what was done about
    it) to the active run: ``faults/<kind>`` and ``faults/total`` count them at the event's step,
    and ``faults.jsonl`` holds every event so far, one JSON object per line. No active run: nothing."""
    import mlflow

    if mlflow.active_run() is None:
        return
    step = event.get("step")
    kind = event["kind"]
    mlflow.log_metric(f"faults/{kind}", float(sum(1 for e in events if e["kind"] == kind)), step=step)
    mlflow.log_metric("faults/total", float(len(events)), step=step)
    mlflow.log_text("".join(json.dumps(e, sort_keys=True, default=str) + "\n" for e in events), "faults.jsonl")


def flat_params(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if not isinstance(v, str) else v
    return out
