"""Episodes as searchable, scored MLflow traces: tags, assessments, span types, the trace choice,
``arena episodes`` filters run in the store, and a tracking store that is dead, mistyped or dies
mid-run (nothing played is lost)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from arena.agents.catalog import make_fixed_policy
from arena.cli import app
from arena.config import load_config
from arena.experiment import run as run_experiment
from arena.records import Episode, Matchup, Turn
from arena.reporting import select_traces
from arena.rollout import play_episode
from arena.tracking import LLM, SCRIPTED, TOOL, TraceContext, TrackingLost, episode_from_trace, log_episode_traces

ROOT = Path(__file__).resolve().parents[1]
BOTS_ONLY = str(ROOT / "configs" / "bots_only.yaml")
ARENA = str(Path(sys.executable).parent / "arena")


@pytest.fixture(scope="module")
def bots_run(tmp_path_factory):
    """``configs/bots_only.yaml`` run once, in process: its result (the episodes in memory) and its store."""
    d = tmp_path_factory.mktemp("bots_run")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    cfg = load_config(BOTS_ONLY, [f"tracking.uri={uri}", f"runs_dir={d / 'arena_runs'}"])
    result = run_experiment(cfg)
    mlflow.set_tracking_uri(uri)
    return result, uri, mlflow.get_run(result.run_id).info.experiment_id


def test_traces_are_tagged_and_scored_and_found_by_game(bots_run):
    result, uri, experiment_id = bots_run
    everything = mlflow.search_traces(locations=[experiment_id], return_type="list")
    negotiation = mlflow.search_traces(locations=[experiment_id], filter_string="tags.`arena.game` = 'negotiation-v0'", return_type="list")
    assert 0 < len(negotiation) < len(everything)
    assert {t.info.tags["arena.game"] for t in negotiation} == {"negotiation-v0"}
    by_id = {ep.episode_id: (ep, label) for ep, label in zip(result.before, result.labels)}
    for trace in everything:
        tags = trace.info.tags
        ep, label = by_id[tags["arena.episode_id"]]
        assert tags["arena.entry"] == label and tags["arena.phase"] == "eval" and tags["arena.round"] == "0"
        assert json.loads(tags["arena.seats"]) == {p: f"{pid}@0" for p, pid in ep.matchup.seats.items()}
        assert tags["arena.outcome"] == ep.outcome and tags["arena.illegal_moves"] == str(ep.illegal_moves)
        scores = {a.name: a.value for a in trace.info.assessments}
        assert {n for n in scores if n.startswith("return")} == {f"return/{p}" for p in ep.returns}
        assert all(scores[f"return/{p}"] == pytest.approx(r) for p, r in ep.returns.items())
        assert scores["group_return"] == pytest.approx(ep.group_return)
        assert all(scores[f"reward/{k}"] == pytest.approx(v) for k, v in ep.reward_components.items())
    # the outcome in the game's words: the shipped negotiation bots reach deals here
    assert {t.info.tags["arena.outcome"] for t in negotiation} <= {"deal", "walk", "timeout", "invalid_deal", "forfeit"}


def test_episodes_command_filters_match_the_episodes_in_memory(bots_run):
    result, uri, _ = bots_run
    out = CliRunner().invoke(
        app, ["episodes", result.run_id, "--game", "negotiation-v0", "--min-return", "seller=0.5", "--ids", "--limit", "0", "--tracking-uri", uri]
    )
    assert out.exit_code == 0, out.output
    expected = sorted(ep.episode_id for ep in result.before if ep.matchup.game == "negotiation-v0" and ep.returns["seller"] >= 0.5)
    assert expected and sorted(out.output.split()) == expected
    # a policy, in any seat, any version; and a filter nothing matches fails with a message naming it
    out = CliRunner().invoke(app, ["episodes", result.run_id, "--policy", "scripted/tit_for_tat", "--ids", "--limit", "0", "--tracking-uri", uri])
    expected = sorted(ep.episode_id for ep in result.before if "scripted/tit_for_tat" in ep.matchup.seats.values())
    assert out.exit_code == 0 and sorted(out.output.split()) == expected
    out = CliRunner().invoke(app, ["episodes", result.run_id, "--max-return", "seller=-1000", "--tracking-uri", uri])
    assert out.exit_code == 2 and "return/seller" in out.output
    out = CliRunner().invoke(app, ["episodes", result.run_id, "--min-return", "seller", "--tracking-uri", uri])
    assert out.exit_code == 2 and "PLAYER=NUMBER" in out.output


def test_spans_are_llm_calls_scripted_moves_and_tool_calls(mlflow_store):
    seats = {"asker": "scripted/always_search", "helper_0": "scripted/always_search", "helper_1": "scripted/always_search"}
    pool = {"scripted/always_search": make_fixed_policy("scripted/always_search", "collab_qa-v0")}
    ep = asyncio.run(play_episode(Matchup(game="collab_qa-v0", seed=3, seats=seats), pool, episode_id="qa"))
    calls = [c for t in ep.turns for c in t.tool_calls]
    assert calls and all(c.name.startswith("search:") and "query" in c.input for c in calls)
    # a model's turn (token ids recorded) is an LLM call
    llm = ep.turns[0].model_copy(update={"completion_ids": [4, 5], "logprobs": [-0.5, -0.25], "policy_id": "main", "policy_version": 2})
    ep = ep.model_copy(update={"turns": [llm, *ep.turns[1:]]})
    mlflow.set_experiment("spans")
    with mlflow.start_run() as run:
        log_episode_traces([(ep, TraceContext(entry="qa", phase="train", round=4, reasons=("sample",)))])
    (trace,) = mlflow.search_traces(run_id=run.info.run_id, return_type="list")
    spans = trace.data.spans
    turns = {s.span_id: s for s in spans if "arena.turn" in (s.attributes or {})}
    assert [s.span_type for s in spans if s.parent_id is None] == ["CHAIN"]
    assert [turns[k].span_type for k in sorted(turns, key=lambda k: turns[k].attributes["arena.turn"])][:2] == [LLM, SCRIPTED]
    tools = [s for s in spans if s.span_type == TOOL]
    assert len(tools) == len(calls)
    for span in tools:
        call = next(c for t in ep.turns for c in t.tool_calls if turns[span.parent_id].attributes["arena.turn"] == t.index)
        assert span.outputs == call.output and span.inputs == call.input  # the results, as the player read them
    assert trace.info.tags["arena.traced"] == "sample" and json.loads(trace.info.tags["arena.seats"])["helper_0"] == "scripted/always_search@0"
    assert episode_from_trace(trace) == ep  # tool calls, outcome and all


def _episode(game: str, seller: float, illegal: bool = False, forfeit: str | None = None) -> Episode:
    turn = Turn(index=0, player="seller", policy_id="main", observation="o", action="a", illegal_reason="bad" if illegal else None)
    return Episode(
        matchup=Matchup(game=game, seed=0, seats={"seller": "main", "buyer": "scripted/fair_buyer"}),
        turns=[turn],
        returns={"seller": seller, "buyer": -seller},
        forfeit=forfeit,
    )


def test_trace_choice_keeps_a_sample_each_entrys_best_and_worst_and_every_illegal_episode():
    eps = [_episode("g", r) for r in (0.1, 0.9, 0.5, -0.3)] + [_episode("h", 0.2), _episode("h", 0.2, illegal=True), _episode("h", 0.4, forfeit="seller")]
    labels = ["a"] * 4 + ["b"] * 3
    chosen = select_traces(eps, labels, step=3, seed=7, sample=2, extremes=True, illegal=True)
    assert sum("sample" in r for r in chosen.values()) == 2
    assert "best" in chosen[1] and "worst" in chosen[3]  # entry a: returns 0.9 and -0.3
    assert "best" in chosen[6] and "worst" in chosen[4]  # entry b: 0.4, and the first of the 0.2s
    assert "illegal" in chosen[5] and "forfeit" in chosen[6]
    # the same draw every time; nothing but the sample when the rules are off
    assert select_traces(eps, labels, step=3, seed=7, sample=2, extremes=True, illegal=True) == chosen
    only = select_traces(eps, labels, step=3, seed=7, sample=2, extremes=False, illegal=False)
    assert all(r == ("sample",) for r in only.values()) and len(only) == 2
    # an entry whose episodes all scored alike has no best or worst
    flat = select_traces([_episode("g", 0.0), _episode("g", 0.0)], ["a", "a"], step=0, seed=0, sample=0, extremes=True, illegal=True)
    assert flat == {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeServerThatIsNotMlflow(BaseHTTPRequestHandler):
    """A web server at the tracking URI that is some other service: every path is 404."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_dead_or_mistyped_tracking_server_fails_fast_before_any_work(tmp_path):
    dead = f"http://127.0.0.1:{_free_port()}"
    tick = time.perf_counter()
    out = subprocess.run(
        [ARENA, "run", BOTS_ONLY], cwd=tmp_path, env={"MLFLOW_TRACKING_URI": dead, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60
    )
    seconds = time.perf_counter() - tick
    assert out.returncode == 2 and dead in out.stderr.replace("\n", ""), out.stderr[-2000:]
    assert seconds < 15
    assert not (tmp_path / "arena_runs").exists()  # no work started

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeServerThatIsNotMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        other = f"http://127.0.0.1:{server.server_address[1]}"
        out = CliRunner().invoke(app, ["run", BOTS_ONLY, f"tracking.uri={other}", f"runs_dir={tmp_path / 'runs'}"])
        assert out.exit_code == 2 and "not as an MLflow tracking server" in out.output
    finally:
        server.shutdown()


class ProxyThatDies:
    """A fake tracking server: a TCP proxy in front of a real MLflow server that can be made to stop
    answering (``die``: connections refused) and to come back (``revive``), as a crashed server would."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = _free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self.revive()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def revive(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=True)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def die(self) -> None:
        self._listener.close()
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server (``arena ui`` on a fresh SQLite store)."""
    port = _free_port()
    proc = subprocess.Popen(
        [ARENA, "ui", "--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path / 'server.db'}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import requests

    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the MLflow server did not start within 90 s")
    yield port
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.long
def test_a_server_that_dies_mid_run_loses_nothing_and_the_episodes_are_logged_later(tmp_path, mlflow_server, monkeypatch):
    import arena.tracking as tracking

    proxy = ProxyThatDies(mlflow_server)
    for key, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
        monkeypatch.setenv(key, value)
    write = tracking.write_journal

    def write_then_die(*args, **kwargs):  # the server dies right after the episodes were played
        path = write(*args, **kwargs)
        proxy.die()
        return path

    monkeypatch.setattr(tracking, "write_journal", write_then_die)
    cfg = load_config(BOTS_ONLY, [f"tracking.uri={proxy.url}", f"runs_dir={tmp_path / 'runs'}"])
    with pytest.raises(TrackingLost) as lost:
        run_experiment(cfg)
    run_dir = lost.value.run_dir
    message = str(lost.value)
    assert proxy.url in message and f"arena log-episodes {run_dir}" in message
    kept = [json.loads(line) for line in (run_dir / "episodes" / "eval" / "eval.jsonl").read_text().splitlines()]
    assert len(kept) == 20 and all(k["traced"] for k in kept)

    proxy.revive()
    monkeypatch.setattr(tracking, "write_journal", write)
    # MLflow's client remembers for the life of a process that the server had no version to give; the
    # user's `arena log-episodes` is a new process, which this test is not
    from mlflow.store.tracking.rest_store import RestStore

    RestStore._get_server_version.cache_clear()
    out = CliRunner().invoke(app, ["log-episodes", str(run_dir), "--tracking-uri", proxy.url])
    assert out.exit_code == 0, out.output
    mlflow.set_tracking_uri(proxy.url)
    traces = mlflow.search_traces(run_id=run_dir.name, locations=[mlflow.get_run(run_dir.name).info.experiment_id], return_type="list")
    assert sorted(t.info.tags["arena.episode_id"] for t in traces) == sorted(k["episode"]["episode_id"] for k in kept)
    # again: nothing is logged twice
    out = CliRunner().invoke(app, ["log-episodes", str(run_dir), "--tracking-uri", proxy.url])
    assert out.exit_code == 0 and "Logged 0 episode traces and 0 episode files" in out.output


def test_a_trace_whose_spans_never_arrived_is_replaced_by_log_episodes(tmp_path, bots_run):
    """A trace is written as its info, then its spans: a server that dies in between leaves a trace
    without spans, which ``arena log-episodes`` replaces (and does not count as logged)."""
    from mlflow.tracing.client import TracingClient

    import arena.tracking as tracking

    result, _, _ = bots_run
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.create_experiment("bots")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        pass
    run_dir = tmp_path / "runs" / "bots" / run.info.run_id
    episodes = result.before[:3]
    contexts = [TraceContext(entry=label, phase="eval", round=0, reasons=("sample",)) for label in result.labels[:3]]
    tracking.write_journal(episodes, contexts, run_dir, "eval/eval.jsonl")
    info, _ = tracking.build_trace(episodes[0], contexts[0], experiment_id=run.info.experiment_id, run_id=run.info.run_id)
    TracingClient().start_trace(info)  # the info reached the store, the spans did not

    out = CliRunner().invoke(app, ["log-episodes", str(run_dir), "--tracking-uri", uri])
    assert out.exit_code == 0, out.output
    traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list")
    assert sorted(t.info.tags["arena.episode_id"] for t in traces) == sorted(ep.episode_id for ep in episodes)
    assert info.trace_id not in {t.info.trace_id for t in traces}
    assert all(
        len(t.data.spans) == 1 + len(ep.turns)
        for t, ep in zip(sorted(traces, key=lambda t: t.info.tags["arena.episode_id"]), sorted(episodes, key=lambda e: e.episode_id))
    )
