"""The MLflow UI's Traces page, in a real browser, after a real run of ``configs/bots_only.yaml``.

A user who opens ``arena ui`` on the run's store must see, with no popover or panel over them: the
episodes' returns as assessment columns (``return/<player>`` and ``group_return``) with a value in a
negotiation episode's row, and, in that episode's trace view, its Arena tags (``arena.game`` =
``negotiation-v0``). The browser is Debian's ``chromium`` (``make test`` installs it with apt-get),
driven by Playwright; Playwright's own browser downloads are never used. Screenshots of the page go
to ``$ARENA_ARTIFACTS_DIR`` (default ``.artifacts/`` in the repository).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARENA = str(Path(sys.executable).with_name("arena"))
INSTALL_HINT = "install Debian's browser with `apt-get install -y chromium` (`make test` does this itself), or point $ARENA_CHROMIUM at a Chromium binary"
#: localStorage entries the UI writes once a user has seen its first-visit hints. Without them a modal
#: "Detect Issues" popover dims the page and the assistant panel takes the right third of the window.
SEEN_HINTS = {
    "mlflow.detectIssues.guidanceShown_v1": "true",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
    "mlflow.assistant.panelOpen_v1": "false",
}


def artifacts_dir() -> Path:
    path = Path(os.environ.get("ARENA_ARTIFACTS_DIR") or REPO / ".artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def chromium() -> Iterator:
    """Debian's chromium under Playwright, headless; a missing browser or Playwright fails the test (never skips)."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.fail('Playwright is not installed: pip install -e ".[dev]" (or `make test`)', pytrace=False)
    executable = os.environ.get("ARENA_CHROMIUM") or shutil.which("chromium")
    if not executable:
        pytest.fail(f"no `chromium` on PATH: {INSTALL_HINT}", pytrace=False)
    with sync_playwright() as p:
        browser, problem = None, ""
        try:
            browser = p.chromium.launch(executable_path=executable)
        except Error as e:
            problem = e.message.splitlines()[0]
        if browser is None:
            pytest.fail(f"{executable} did not start under Playwright ({problem}): {INSTALL_HINT}", pytrace=False)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@contextmanager
def mlflow_ui(uri: str, cwd: Path) -> Iterator[str]:
    """`arena ui` on the store, as a user starts it; yields its base URL and stops the server (and its workers) after."""
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}  # nothing outside this machine is reachable anyway
    log = open(cwd / "ui.log", "w+b")  # a file, not a pipe: a full pipe would stall the server
    proc = subprocess.Popen([ARENA, "ui", "--port", str(port), "--tracking-uri", uri], cwd=cwd, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not answers(f"http://127.0.0.1:{port}/health"):
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                pytest.fail(f"`arena ui` did not answer on port {port}:\n{log.read().decode(errors='replace')[-2000:]}", pytrace=False)
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def assert_seen(locator, what: str) -> None:
    """The element is scrolled into the viewport and is what a user sees at its centre (no popover or panel over it)."""
    from playwright.sync_api import expect

    expect(locator, f"{what} is not shown (not on the page, or hidden behind a modal popover)").to_be_visible(timeout=60_000)
    locator.scroll_into_view_if_needed()
    expect(locator, f"{what} is outside the window").to_be_in_viewport()
    cover = locator.evaluate(
        """el => {
            const r = el.getBoundingClientRect();
            const top = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
            return top && (el.contains(top) || top.contains(el)) ? null : (top ? top.outerHTML.slice(0, 200) : 'nothing');
        }"""
    )
    assert cover is None, f"{what} is covered by {cover}"


def header(page, title: str):
    # by its text: a header's accessible name goes on with its buttons' labels ("return/seller Column options for ...")
    return page.get_by_role("columnheader").filter(has=page.get_by_text(title, exact=True))


def check_traces_page(browser, base: str, experiment_id: str) -> None:
    """Open the experiment's Traces page at `base` and check what a user sees there; screenshots to :func:`artifacts_dir`."""
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    context.add_init_script("".join(f"localStorage.setItem({k!r}, {v!r});" for k, v in SEEN_HINTS.items()))
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{base}/#/experiments/{experiment_id}/traces")
    shots = artifacts_dir()
    for stale in shots.glob("traces_page*.png"):
        stale.unlink()
    try:
        # The table: the assessment columns, and a negotiation episode's value under return/seller.
        seller = header(page, "return/seller")
        assert_seen(seller, "the return/seller column")
        assert_seen(header(page, "group_return"), "the group_return column")
        column = page.get_by_role("columnheader").all_inner_texts().index("return/seller")
        row = page.get_by_role("row").filter(has_text="negotiation-v0").first
        value = row.get_by_role("cell").nth(column)
        assert_seen(value, "a negotiation episode's return/seller value")
        assert re.fullmatch(r"-?\d+(\.\d+)?", value.inner_text().strip()), f"its return/seller cell reads {value.inner_text()!r}"
        page.screenshot(path=shots / "traces_page.png")

        # The episode's trace view: its tags, in the card that hovering "N tags" opens.
        row.click()
        page.get_by_text(re.compile(r"^\d+ tags?$")).hover()
        name = page.locator("[data-radix-popper-content-wrapper]").get_by_text("arena.game", exact=True)
        assert_seen(name, "the arena.game tag")
        tag_value = name.locator("xpath=following-sibling::*[1]")
        assert_seen(tag_value, "the arena.game tag's value")
        assert tag_value.inner_text() == "negotiation-v0", f"arena.game reads {tag_value.inner_text()!r}"
        page.screenshot(path=shots / "traces_page_trace.png")
    except BaseException:
        page.screenshot(path=shots / "traces_page_failed.png")
        print(f"screenshot of the failure: {shots / 'traces_page_failed.png'}")
        raise
    finally:
        context.close()
    print(f"screenshots: {shots / 'traces_page.png'}, {shots / 'traces_page_trace.png'}")


@pytest.mark.long
def test_traces_page_shows_returns_and_arena_tags(tmp_path):
    import mlflow

    from arena.config import load_config

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = REPO / "configs" / "bots_only.yaml"
    with chromium() as browser:  # first: a missing browser fails before the run's seconds are spent
        run = subprocess.run(
            [ARENA, "run", str(config), f"tracking.uri={uri}", f"runs_dir={tmp_path / 'runs'}"],
            cwd=tmp_path,
            env={**os.environ, "ARENA_HOME": str(tmp_path / "home")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        name = load_config(str(config)).tracking.experiment
        experiment = mlflow.MlflowClient(uri).get_experiment_by_name(name)
        assert experiment is not None, f"the run logged no experiment named {name!r}"
        with mlflow_ui(uri, tmp_path) as base:
            check_traces_page(browser, base, experiment.experiment_id)
