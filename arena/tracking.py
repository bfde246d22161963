"""MLflow: one run per experiment, metrics per round, episodes kept on disk and traced.

Every episode of a round is written first to the run's directory
(``<runs_dir>/<name>/<run_id>/episodes/``, JSON lines) and logged as an artifact;
those :func:`arena.reporting.select_traces` picks become traces. A trace is an
episode made searchable and scored:

- tags: ``arena.game``, ``arena.entry`` (the config entry), ``arena.phase``
  (``train`` / ``eval``), ``arena.round``, ``arena.seats`` (JSON: player ->
  ``policy@version``), ``arena.outcome`` (the game's word: ``deal``, ``crew win``;
  ``forfeit``), ``arena.illegal_moves``, ``arena.traced`` (why: sample, best,
  worst, illegal, forfeit) and ``arena.episode_id``;
- assessments (MLflow feedback, source ``CODE``/``arena``): ``return/<player>``,
  ``group_return`` and ``reward/<component>``, so the Traces page shows them as
  columns and ``search_traces`` filters on them (``feedback.`return/seller` >= 0.5``);
- spans: the root holds the matchup and the outcome; one span per turn, of type
  ``LLM`` (a model's turn), ``SCRIPTED`` (a bot's move) or ``AGENT`` (anything
  else), with the observation in and the action out, the token ids and sampler
  logprobs as attributes; a ``TOOL`` span under a turn for each tool the game ran
  for it (collab_qa's searches), with the tool's result as its output.

Traces are written synchronously, all of a round's spans in one batch: a
tracking server that dies raises in the round that logs (the run then says
where its episodes are and how to log them later: :class:`TrackingLost`,
:func:`log_journals`), and a server that is not there fails before any work
(:func:`check_store`). :func:`episodes_from_run` reads episodes back, filtered
in the store (:class:`EpisodeFilter`).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arena.records import Episode, Matchup, ToolCall, Turn

DEFAULT_DB = "mlflow.db"


def tracking_uri(uri: str | None = None) -> str:
    """The store to use: explicit, else ``$MLFLOW_TRACKING_URI``, else SQLite in the working directory."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be used: a server that does not answer, a URI MLflow cannot read."""


#: seconds a run waits for a tracking server to answer before giving up on it
CHECK_TIMEOUT_S = 5.0


class TrackingLost(RuntimeError):
    """The tracking store stopped answering during a run; says where the run's episodes are kept."""

    def __init__(self, uri: str, cause: BaseException, run_dir: Path | None = None, resumable: bool = False):
        self.uri, self.run_dir = uri, run_dir
        what = f"{type(cause).__name__}: {str(cause).splitlines()[0][:200]}" if str(cause) else type(cause).__name__
        text = f"the MLflow tracking store {uri} stopped answering during the run ({what})."
        if run_dir is not None:
            text += (
                f" Nothing played is lost: every episode so far is in {run_dir / JOURNAL_DIR}/."
                f" When the store answers again, `arena log-episodes {run_dir}` logs them to MLflow run {run_dir.name}"
            )
            text += ", and `arena run CONFIG --resume` continues from the last checkpoint." if resumable else "."
        super().__init__(text)


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_store(uri: str, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Fail fast, naming the URI, when the store cannot be used; before any work is done.

    A server must answer ``GET /health`` within ``timeout`` seconds (MLflow's client would retry
    for minutes). Other URIs must name a store MLflow can open."""
    if is_server(uri):
        import requests

        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        except requests.RequestException as e:
            raise TrackingUnavailable(f"the MLflow tracking server {uri} does not answer ({type(e).__name__}); start it, or fix the URI") from None
        if response.status_code != 200:
            raise TrackingUnavailable(
                f"{uri} answers, but not as an MLflow tracking server (GET /health: HTTP {response.status_code}); check the URI (host, port, path)"
            )
        return
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:
        raise TrackingUnavailable(f"cannot open the MLflow tracking store {uri}: {str(e).splitlines()[0][:300]}") from None


def bound_http_retries() -> None:
    """A tracking server that dies mid-run is noticed in seconds, not after MLflow's minutes of retries
    (unless the user set these)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def store_answers(uri: str) -> bool:
    """Whether the tracking store can be used right now (for telling a lost server from other errors)."""
    try:
        check_store(uri, timeout=3.0)
    except TrackingUnavailable:
        return False
    return True


def quiet_mlflow() -> None:
    # The SQLite store announces table creation and migrations at INFO on first use.
    for name in ("mlflow.store.db.utils", "mlflow.tracking.fluent", "alembic", "mlflow.tracing.export.async_export_queue"):
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class TraceContext:
    """Where an episode was played: the config entry, the phase and round, and why it was traced."""

    entry: str
    phase: str  # "train" or "eval"
    round: int
    reasons: tuple[str, ...] = ()


#: span types: a model's turn is an LLM call, a bot's a scripted move, a game's tool (a search) a tool call
LLM, SCRIPTED, TOOL, AGENT = "LLM", "SCRIPTED", "TOOL", "AGENT"
#: who logged the assessments (MLflow shows the source next to each value)
ASSESSMENT_SOURCE_ID = "arena"
#: the tag MLflow's store sets on a trace once its spans are written
SPANS_LOCATION_TAG = "mlflow.trace.spansLocation"


def seat_ids(ep: Episode) -> dict[str, str]:
    """Player -> ``policy@version`` of the policy that sat there (the version of its last turn)."""
    out = {}
    for player, pid in ep.matchup.seats.items():
        last = next((t for t in reversed(ep.turns) if t.player == player), None)
        pid, version = (last.policy_id, last.policy_version) if last is not None else (pid, 0)
        out[player] = pid if "@" in pid else f"{pid}@{version}"
    return out


def episode_tags(ep: Episode, ctx: TraceContext) -> dict[str, str]:
    """The trace tags of an episode: what ``arena episodes`` and ``mlflow.search_traces`` filter on."""
    tags = {
        "arena.episode_id": ep.episode_id,
        "arena.game": ep.matchup.game,
        "arena.entry": ctx.entry,
        "arena.phase": ctx.phase,
        "arena.round": str(ctx.round),
        "arena.seats": json.dumps(seat_ids(ep), separators=(",", ":")),
        "arena.illegal_moves": str(ep.illegal_moves),
    }
    if ep.outcome is not None or ep.forfeit is not None:
        tags["arena.outcome"] = ep.outcome or "forfeit"
    if ep.forfeit is not None:
        tags["arena.forfeit"] = ep.forfeit
    if ctx.reasons:
        tags["arena.traced"] = ",".join(ctx.reasons)
    return tags


def episode_scores(ep: Episode) -> dict[str, float]:
    """The assessments of an episode: ``return/<player>``, ``group_return`` and ``reward/<component>``."""
    out = {f"return/{p}": float(r) for p, r in ep.returns.items()}
    out["group_return"] = float(ep.group_return)
    out.update({f"reward/{k}": float(v) for k, v in ep.reward_components.items()})
    return out


def turn_span_type(turn: Turn) -> str:
    from arena.config import is_model_policy

    if turn.completion_ids or is_model_policy(turn.policy_id.split("@")[0]):
        return LLM
    if turn.policy_id.startswith(("scripted/", "random")):
        return SCRIPTED
    return AGENT


def _b64(value: int, size: int) -> str:
    return base64.b64encode(value.to_bytes(size, "big")).decode()


def _span(trace_id: str, otel_trace: int, span_id: int, parent: int | None, name: str, kind: str, start: int, end: int, inputs, outputs, attrs) -> Any:
    from mlflow.entities import Span

    attributes = {
        "mlflow.traceRequestId": json.dumps(trace_id),
        "mlflow.spanType": json.dumps(kind),
        "mlflow.spanInputs": json.dumps(inputs, default=str),
        "mlflow.spanOutputs": json.dumps(outputs, default=str),
        **{k: json.dumps(v, default=str) for k, v in attrs.items()},
    }
    return Span.from_dict(
        {
            "trace_id": _b64(otel_trace, 16),
            "span_id": _b64(span_id, 8),
            "parent_span_id": _b64(parent, 8) if parent is not None else None,
            "name": name,
            "start_time_unix_nano": start,
            "end_time_unix_nano": max(end, start),
            "events": [],
            "status": {"code": "STATUS_CODE_OK", "message": ""},
            "attributes": attributes,
            "links": [],
        }
    )


def _preview_seats(ep: Episode) -> str:
    return " vs ".join(f"{p}={pid}" for p, pid in seat_ids(ep).items())


def _preview_outcome(ep: Episode) -> str:
    text = ", ".join(f"{p} {r:+.3f}" for p, r in ep.returns.items())
    ending = ep.outcome or ("forfeit" if ep.forfeit else None)
    return text + (f" ({ending})" if ending else "") + (f", {ep.illegal_moves} illegal" if ep.illegal_moves else "")


def build_trace(ep: Episode, ctx: TraceContext, *, experiment_id: str, run_id: str | None) -> tuple[Any, list[Any]]:
    """An episode as an MLflow trace: its info (tags and assessments included) and its spans.

    The root span holds the matchup and the outcome; one child span per turn (an LLM call, a
    scripted move, or another agent's move) with the observation in and the action out; one
    tool span under a turn for each tool the game ran for it, with the tool's result as output.
    """
    from mlflow.entities import AssessmentSource, Feedback, TraceInfo, TraceLocation, TraceState

    otel_trace = int.from_bytes(os.urandom(16), "big")  # never the global `random` (MLflow's ids repeat when it is seeded)
    trace_id = f"tr-{otel_trace:032x}"
    now = time.time_ns()
    start = min((t.start_ns for t in ep.turns if t.start_ns), default=now)
    end = max((t.end_ns for t in ep.turns if t.end_ns), default=start)
    ids = iter(int.from_bytes(os.urandom(8), "big") | 1 for _ in range(4 * len(ep.turns) + 4 + sum(len(t.tool_calls) for t in ep.turns)))
    root_id = next(ids)
    outputs = {"returns": ep.returns, "group_return": ep.group_return, "reward_components": ep.reward_components, "metrics": ep.metrics}
    if ep.outcome is not None:
        outputs["outcome"] = ep.outcome
    if ep.forfeit is not None:
        outputs["forfeit"] = ep.forfeit
    spans = [
        _span(
            trace_id,
            otel_trace,
            root_id,
            None,
            f"{ep.matchup.game} {ep.episode_id}",
            "CHAIN",
            start,
            end,
            {"matchup": ep.matchup.model_dump(mode="json")},
            outputs,
            {"arena.episode_id": ep.episode_id, "arena.game": ep.matchup.game, "arena.truncated": ep.truncated},
        )
    ]
    for t in ep.turns:
        turn_id = next(ids)
        t_start = t.start_ns or start
        t_end = max(t.end_ns, t_start)
        attrs = {
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
        }
        spans.append(
            _span(
                trace_id,
                otel_trace,
                turn_id,
                root_id,
                f"{t.index}: {t.player}",
                turn_span_type(t),
                t_start,
                t_end,
                {"observation": t.observation},
                {"action": t.action},
                attrs,
            )
        )
        for k, call in enumerate(t.tool_calls):
            spans.append(_span(trace_id, otel_trace, next(ids), turn_id, call.name, TOOL, t_end, t_end, call.input, call.output, {"arena.tool_index": k}))
    source = AssessmentSource(source_type="CODE", source_id=ASSESSMENT_SOURCE_ID)
    info = TraceInfo(
        trace_id=trace_id,
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=start // 1_000_000,
        execution_duration=max(end - start, 0) // 1_000_000,
        state=TraceState.OK,
        request_preview=_preview_seats(ep),
        response_preview=_preview_outcome(ep),
        trace_metadata={"mlflow.trace_schema.version": "3", **({"mlflow.sourceRun": run_id} if run_id else {})},
        tags={"mlflow.traceName": f"{ep.matchup.game} {ep.episode_id}", **episode_tags(ep, ctx)},
        assessments=[Feedback(name=name, value=value, source=source, trace_id=trace_id) for name, value in episode_scores(ep).items()],
    )
    return info, spans


def log_episode_traces(items: Sequence[tuple[Episode, TraceContext]], *, experiment_id: str | None = None, run_id: str | None = None) -> list[str]:
    """Log episodes as traces of the active run (or of ``run_id`` in ``experiment_id``); returns the trace ids.

    The traces are written synchronously: each trace's info (tags and assessments) in one insert,
    then every span of every episode in one batch. Info first: the store's span writer creates a
    bare trace when it finds none, and the info would then go in row by row, several times slower.
    A few milliseconds an episode on a local store, and a dead tracking server raises here, in the
    round that logs, instead of dropping traces in a background thread.
    """
    import mlflow
    from mlflow.tracing.client import TracingClient

    if not items:
        return []
    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise RuntimeError("log_episode_traces needs an active MLflow run or a run_id")
        run_id, experiment_id = active.info.run_id, active.info.experiment_id
    if experiment_id is None:
        experiment_id = mlflow.get_run(run_id).info.experiment_id
    client = TracingClient()
    built = [build_trace(ep, ctx, experiment_id=experiment_id, run_id=run_id) for ep, ctx in items]
    for info, _ in built:
        client.start_trace(info)
    client.log_spans(experiment_id, [span for _, spans in built for span in spans])
    return [info.trace_id for info, _ in built]


def log_episode_trace(ep: Episode, ctx: TraceContext | None = None) -> str:
    """Log one episode as a trace in the active run; returns the trace id."""
    return log_episode_traces([(ep, ctx or TraceContext(entry=ep.matchup.game, phase="eval", round=0))])[0]


def flush_traces() -> None:
    """Wait for MLflow's background trace export (traces Arena logs itself are written synchronously)."""
    import mlflow

    flush = getattr(mlflow, "flush_trace_async_logging", None)
    if flush is not None:
        flush()


def episode_from_trace(trace: Any) -> Episode:
    """Rebuild an Episode from a trace written by :func:`log_episode_traces`."""
    spans = list(trace.data.spans)
    roots = [s for s in spans if s.parent_id is None]
    if len(roots) != 1 or "arena.episode_id" not in (roots[0].attributes or {}):
        raise ValueError(f"trace {trace.info.trace_id} is not an Arena episode")
    root = roots[0]
    tools: dict[str, list[Any]] = defaultdict(list)
    for s in spans:
        if s.span_type == TOOL and s.parent_id is not None:
            tools[s.parent_id].append(s)
    turns = []
    for s in spans:
        a = s.attributes or {}
        if s.parent_id != root.span_id or "arena.turn" not in a:
            continue
        calls = sorted(tools.get(s.span_id, []), key=lambda c: int((c.attributes or {}).get("arena.tool_index", 0)))
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
                tool_calls=[ToolCall(name=c.name, input=c.inputs or {}, output=c.outputs) for c in calls],
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
        outcome=out.get("outcome"),
        forfeit=out.get("forfeit"),
    )


@dataclass
class EpisodeFilter:
    """What ``arena episodes`` selects, as an MLflow trace filter (:meth:`filter_string`): the search
    runs in the tracking store, not over every episode read back."""

    game: str | None = None
    entry: str | None = None
    phase: str | None = None
    #: a policy that sat in any seat: ``main`` (any version) or ``main@3`` (that version)
    policy: str | None = None
    #: (player, lowest return) and (player, highest return) pairs
    min_return: list[tuple[str, float]] = field(default_factory=list)
    max_return: list[tuple[str, float]] = field(default_factory=list)
    #: only episodes with an illegal move
    illegal: bool = False

    def filter_string(self) -> str | None:
        clauses = []
        for tag, value in (("arena.game", self.game), ("arena.entry", self.entry), ("arena.phase", self.phase)):
            if value is not None:
                clauses.append(f"tags.`{tag}` = {_quote(value)}")
        if self.policy is not None:
            # seats are stored as {"player":"policy@version",...}: match a whole id, any version unless given
            pattern = f'%:"{self.policy}"%' if "@" in self.policy else f'%:"{self.policy}@%'
            clauses.append(f"tags.`arena.seats` LIKE {_quote(pattern)}")
        for player, value in self.min_return:
            clauses.append(f"feedback.`return/{_name(player)}` >= {float(value)!r}")
        for player, value in self.max_return:
            clauses.append(f"feedback.`return/{_name(player)}` <= {float(value)!r}")
        if self.illegal:
            clauses.append("tags.`arena.illegal_moves` != '0'")
        return " AND ".join(clauses) or None

    def matches(self, ep: Episode) -> bool:
        """The same selection on an episode in memory (LIKE's ``_`` matches any character: recheck)."""
        if self.game is not None and ep.matchup.game != self.game:
            return False
        if self.policy is not None:
            ids = seat_ids(ep).values()
            if not any(i == self.policy or ("@" not in self.policy and i.rsplit("@", 1)[0] == self.policy) for i in ids):
                return False
        if any(ep.returns.get(p, float("-inf")) < v for p, v in self.min_return):
            return False
        if any(ep.returns.get(p, float("inf")) > v for p, v in self.max_return):
            return False
        return not (self.illegal and not ep.illegal_moves)


def _quote(value: str) -> str:
    if "'" in value:
        raise ValueError(f"a filter value may not contain a single quote: {value!r}")
    return f"'{value}'"


def _name(player: str) -> str:
    if not player or "`" in player:
        raise ValueError(f"not a player name: {player!r}")
    return player


def episodes_from_run(run_id: str, uri: str | None = None, max_results: int | None = None, where: EpisodeFilter | None = None) -> list[Episode]:
    """The episode traces logged in a run that ``where`` selects, oldest first."""
    import mlflow

    quiet_mlflow()
    mlflow.set_tracking_uri(tracking_uri(uri))
    run = mlflow.get_run(run_id)  # raises a clear MlflowException for an unknown id
    traces = mlflow.search_traces(
        locations=[run.info.experiment_id],
        run_id=run_id,
        filter_string=where.filter_string() if where else None,
        return_type="list",
        max_results=max_results,
        order_by=["timestamp_ms ASC"],
    )
    episodes = [episode_from_trace(t) for t in traces]
    return [ep for ep in episodes if where is None or where.matches(ep)]


JOURNAL_DIR = "episodes"


def write_journal(episodes: Sequence[Episode], contexts: Sequence[TraceContext], run_dir: Path | None, artifact: str) -> Path:
    """Write a round's episodes to ``<run_dir>/episodes/<artifact>``, one JSON object a line: the
    episode with its entry, phase, round and trace reasons (empty: not traced). Without a run
    directory, to a temporary file (the MLflow artifact is then the only copy)."""
    import tempfile

    root = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="arena-episodes-"))
    path = root / JOURNAL_DIR / artifact
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"entry": c.entry, "phase": c.phase, "round": c.round, "traced": list(c.reasons), "episode": ep.model_dump(mode="json")}) + "\n"
        for ep, c in zip(episodes, contexts)
    ]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(path)
    return path


def read_journal(path: Path) -> list[tuple[Episode, TraceContext]]:
    """The episodes of a journal file, each with where it was played and why it was traced."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            ctx = TraceContext(entry=d["entry"], phase=d["phase"], round=int(d["round"]), reasons=tuple(d.get("traced", ())))
            out.append((Episode.model_validate(d["episode"]), ctx))
    return out


def log_journal_artifact(path: Path, artifact: str) -> None:
    """The journal file as the run's artifact ``episodes/<artifact>``."""
    import mlflow

    sub = str(Path(JOURNAL_DIR) / artifact).rsplit("/", 1)[0]
    mlflow.log_artifact(str(path), sub)


def log_journals(run_dir: Path, uri: str | None = None, *, everything: bool = False) -> tuple[int, int]:
    """Log what a run kept on disk (``<run_dir>/episodes/``) to its MLflow run: the journal files
    the run lacks as artifacts, and the episodes chosen for tracing (all with ``everything``) that
    it lacks as traces. Safe to repeat: what is there already is not logged twice. Returns
    (traces logged, artifacts logged)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    run_dir = Path(run_dir)
    files = sorted((run_dir / JOURNAL_DIR).rglob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no episodes under {run_dir / JOURNAL_DIR}/ (a run directory is <runs_dir>/<name>/<run_id>)")
    quiet_mlflow()
    mlflow.set_tracking_uri(tracking_uri(uri))
    run = mlflow.get_run(run_dir.name)  # the run directory is named after its MLflow run
    experiment_id, run_id = run.info.experiment_id, run.info.run_id
    client = MlflowClient()
    traced = mlflow.search_traces(locations=[experiment_id], run_id=run_id, return_type="list", include_spans=False)
    # a trace is written in two steps (its info, then its spans); one whose spans never arrived
    # (the server died in between) is replaced
    partial = [t.info.trace_id for t in traced if SPANS_LOCATION_TAG not in t.info.tags]
    if partial:
        client.delete_traces(experiment_id, trace_ids=partial)
    have = {
        (t.info.tags.get("arena.phase"), t.info.tags.get("arena.round"), t.info.tags.get("arena.episode_id")) for t in traced if t.info.trace_id not in partial
    }
    n_traces = n_files = 0
    for f in files:
        rel = f.relative_to(run_dir)
        present = {a.path for a in client.list_artifacts(run_id, str(rel.parent))}
        if str(rel) not in present:
            client.log_artifact(run_id, str(f), str(rel.parent))
            n_files += 1
        todo = [(ep, c) for ep, c in read_journal(f) if (everything or c.reasons) and (c.phase, str(c.round), ep.episode_id) not in have]
        log_episode_traces(todo, experiment_id=experiment_id, run_id=run_id)
        n_traces += len(todo)
    return n_traces, n_files


def log_fault(event: dict[str, Any], events: list[dict[str, Any]], run_id: str | None = None) -> None:
    """Log a fault of a distributed run (a dead rollout worker or engine, and what was done about
    it) to run ``run_id`` (default: the active run): ``faults/<kind>`` and ``faults/total`` count them
    at the event's step, and ``faults.jsonl`` holds every event so far, one JSON object per line. No
    run: nothing. A run id is needed where a fault is found off the thread that started the run
    (MLflow's active run is per thread)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            return
        run_id = active.info.run_id
    client = MlflowClient()
    step = event.get("step") or 0
    kind = event["kind"]
    client.log_metric(run_id, f"faults/{kind}", float(sum(1 for e in events if e["kind"] == kind)), step=step)
    client.log_metric(run_id, "faults/total", float(len(events)), step=step)
    client.log_text(run_id, "".join(json.dumps(e, sort_keys=True, default=str) + "\n" for e in events), "faults.jsonl")


def flat_params(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if not isinstance(v, str) else v
    return out
