"""Shared fixtures: a tiny model built once per test session, and an isolated MLflow store."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

# Under pytest-xdist each worker's torch, and what it starts (arena CLI runs, Ray workers), gets its
# share of the cores: two workers each running two OpenMP threads on two cores took 1.6x as long per
# training step as with one thread each (the threads spin waiting for each other).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

#: the games whose text trains the shared tiny model's tokenizer and whose bots its warm start imitates
#: (the self-play config's games, in its order): every test that uses these fixtures shares one cached model
MODEL_GAMES = ("repeated_matrix-v0", "negotiation-v0")


@dataclass
class CliResult:
    """What a command left: its exit status and what it printed (subprocess.CompletedProcess's names)."""

    returncode: int
    stdout: str
    stderr: str


def arena_in_process(*args: str, cwd: Path, env: dict | None = None) -> CliResult:
    """``arena ARGS`` through the same typer app as the ``arena`` script, in this process, from ``cwd``
    with ``env`` added to the environment (both restored after). For requests that stop before any work
    (usage errors): the script's start-up (torch, transformers, MLflow) costs seconds a call, and
    tests/test_cli.py runs the installed script itself. Errors are printed unwrapped, as on a wide terminal."""
    from typer.testing import CliRunner

    from arena import cli

    old_cwd, old_env, old_width = Path.cwd(), {k: os.environ.get(k) for k in env or {}}, cli.err.width
    os.chdir(cwd)
    os.environ.update(env or {})
    cli.err.width = 1000
    try:
        out = CliRunner().invoke(cli.app, list(args))
    finally:
        cli.err.width = old_width
        os.chdir(old_cwd)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if out.exception is not None and not isinstance(out.exception, SystemExit):
        raise out.exception
    return CliResult(out.exit_code, out.stdout, out.stderr)


def model_cache(tmp_path_factory) -> Path:
    """The session's model cache. With parallel workers (pytest-xdist) they share one: each model
    is built once, by the first worker to need it, while a worker that needs it too waits on the
    build's lock (arena.tiny.build_once) instead of building it again."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    cache = root / "arena_home"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The default tiny model (tokenizer trained on the games' own text), built as a user's first run builds it."""
    from arena.models import resolve_model_path
    from arena.tiny import TinyModelConfig

    return Path(resolve_model_path(None, TinyModelConfig(), cache_dir=model_cache(tmp_path_factory), games=MODEL_GAMES))


@pytest.fixture(scope="session")
def warm_model_dir(tiny_model_dir: Path) -> Path:
    """The default warm start of the tiny model (imitation of the scripted bots), built once per session
    in the same cache, as a user's first run builds it; runs started by tests then reuse it."""
    from arena.models import resolve_model_path
    from arena.tiny import TinyModelConfig
    from arena.trainers.imitation import ImitationConfig

    return Path(resolve_model_path(None, TinyModelConfig(), cache_dir=tiny_model_dir.parent.parent, warm_start=ImitationConfig(), games=MODEL_GAMES))


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, tests marked ``long`` come first (in their collected order; every worker sorts the
    same way). The scheduler hands out the xdist groups first (it orders them by size), then the other tests
    in this order: a long test last in line kept one core busy for a minute and a half after the other had
    finished. A run without workers keeps the files' order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("long") is None)


def pytest_configure(config):
    """``--dist loadgroup`` (the Makefile's) keeps each ``xdist_group`` on one worker by renaming its tests'
    node ids, which pytest 9 no longer allows: the groups silently split, the Ray tests ran on two
    workers at once and the suite took half as long again. Refuse that pair instead."""
    if getattr(config.option, "dist", "no") == "loadgroup" and int(pytest.__version__.split(".")[0]) >= 9:
        raise pytest.UsageError(
            f"pytest {pytest.__version__}: pytest-xdist's --dist loadgroup does not keep xdist_group tests together "
            "under pytest 9; install the dev extra (pip install '.[dev]', as make test does; it pins pytest<9)"
        )


@pytest.fixture(scope="session")
def arena_home(tiny_model_dir: Path, warm_model_dir: Path):
    """ARENA_HOME for in-process runs: the session's model cache (the default warm start is built there once)."""
    home = str(tiny_model_dir.parent.parent)
    old = os.environ.get("ARENA_HOME")
    os.environ["ARENA_HOME"] = home
    yield Path(home)
    if old is None:
        os.environ.pop("ARENA_HOME", None)
    else:
        os.environ["ARENA_HOME"] = old


@pytest.fixture(autouse=True)
def _ray_group_builds_the_warm_start(request):
    """Under pytest-xdist the two xdist groups start first, one on each worker, and most tests after them
    need the session's warm start (``warm_model_dir``, a minute and a half of one core). Built by the first
    of those, the other worker sat waiting for it; the Ray group, the shorter, builds it first instead."""
    group = request.node.get_closest_marker("xdist_group")
    if os.environ.get("PYTEST_XDIST_WORKER") and group is not None and group.args[0] == "ray":
        request.getfixturevalue("warm_model_dir")


@pytest.fixture(autouse=True)
def _restore_process_environment():
    """A test that points MLflow somewhere (``mlflow.set_tracking_uri`` also sets $MLFLOW_TRACKING_URI, which
    child processes inherit) or sets $ARENA_HOME leaves both as it found them."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "ARENA_HOME")}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    """A fresh SQLite MLflow store, used through $MLFLOW_TRACKING_URI like a user's would be."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


@pytest.fixture(scope="session")
def qa_tiny():
    """The collaborative-QA model's shape (the quick start's ``model.tiny``): 128 wide, four heads."""
    from arena.config import QUICK_START
    from arena.tiny import TinyModelConfig

    return TinyModelConfig.model_validate(QUICK_START["model"]["tiny"])


@pytest.fixture(scope="session")
def qa_knowledge():
    """The collaborative-QA model's recipe at test size: a smaller world (60 facts, 30 known), fewer steps."""
    from arena.environments.collab_qa.knowledge import KnowledgeConfig

    return KnowledgeConfig.model_validate(
        {
            "world": {"persons": 8, "towns": 3, "compounds": 8, "organisms": 3},
            "reading": {"steps": 200, "batch_size": 16, "lr": 3e-3},
            # ~35 passes over the known facts, closed-book and in the game. At 200 steps here and in the warm
            # start (a minute less of the suite) the model passed its tests on one machine and failed two on
            # another (known facts in the game's prompts 0.75, F1 alone 0.19): too thin a margin
            "pretrain": {"steps": 300, "batch_size": 32, "lr": 5e-3},
            "warm_start": {"steps": 300, "batch_size": 32, "lr": 2e-3},
            "collaborative_episodes": 32,
            "isolated_episodes": 48,
            # 200 steps searched on 0.93 of known facts against 1.0 of unknown ones from the 300-step warm start
            "action_supervised": {"steps": 300, "batch_size": 32, "lr": 2e-3},
        }
    )


@pytest.fixture(scope="session")
def qa_model_dir(tiny_model_dir: Path, qa_knowledge, qa_tiny) -> Path:
    """The collaborative-QA model (arena.environments.collab_qa.knowledge) for ``qa_knowledge``, built once per session
    in the session's model cache, as `arena run` with that warm start builds it."""
    from arena.models import resolve_model_path

    return Path(resolve_model_path(None, qa_tiny, cache_dir=tiny_model_dir.parent.parent, warm_start=qa_knowledge))


@pytest.fixture(scope="session")
def action_supervised_dir(qa_model_dir: Path, qa_knowledge) -> Path:
    """The action-supervised baseline of the collaborative-QA model, built once per session likewise."""
    from arena.environments.collab_qa.knowledge import cached_action_supervised

    return cached_action_supervised(qa_model_dir, qa_knowledge, qa_model_dir.parent.parent)
