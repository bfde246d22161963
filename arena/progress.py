"""Progress of long builds (the tiny model's warm starts, the collaborative-QA model): what a stage
reports, and who listens. `arena run` shows it on its "Preparing the model" spinner.

    with build_progress(print):
        path = cached_warm_start(...)          # "imitation: step 10/600, loss 1.234", ...

It imports nothing of Arena, so any module may report through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: where a build's progress goes (a line of text per update); None: nowhere
_PROGRESS: ContextVar[Callable[[str], None] | None] = ContextVar("arena_build_progress", default=None)


@contextmanager
def build_progress(callback: Callable[[str], None]) -> Iterator[None]:
    """Send the progress of model builds started in this block to ``callback`` (e.g. a spinner's
    ``update``): lines such as ``"reading: step 500/3000, loss 0.412"``."""
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def stage_progress(stage: str, steps: int, every: int = 10) -> Callable[[int, float], None] | None:
    """A ``progress(step, loss)`` callback for a training stage of ``steps`` steps that reports every
    ``every`` steps (and the last) to :func:`build_progress`'s callback; None when nobody listens."""
    callback = _PROGRESS.get()
    if callback is None:
        return None

    def progress(step: int, loss: float) -> None:
        if (step + 1) % every == 0 or step + 1 == steps:
            callback(f"{stage}: step {step + 1}/{steps}, loss {loss:.3f}")

    return progress
