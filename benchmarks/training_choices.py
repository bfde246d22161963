"""What collaborative-QA self-play chose, round by round, and what ReST kept of it: prints one JSON object.

For each run directory given (``arena_runs/<name>/<run id>``, or a run kept by
``benchmarks/csp_reproduction.py --keep``), every training round's episodes
(``episodes/train/round_*.jsonl``), per entry:

- ``asker_search_known`` / ``asker_search_unknown``: the share of episodes where the asker searched,
  over the facts the data marks known and those it does not (the choice self-play trains, beside
  the helpers, at the sampling temperature), and ``helper_search``: where a helper searched;
- ``group_return``: the mean group reward;
- with ``trainer.recipe: rest``, ``kept``: the asker seats the trainer's own filter
  (:func:`arena.trainers.selfplay.rest_samples`, on the run's trainer config) keeps, counted by
  known / unknown fact and by the asker's first move (``SEARCH``, ``ANSWER``, ``ASK``, ...), and
  ``groups_kept``: the question groups that kept any seat, out of all.

A filter that keeps answers on known facts and searches on unknown ones while the sampled choice does
not split says the learner, not the filter, is what is slow.

    python benchmarks/training_choices.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path

MOVE = re.compile(r"\s*([A-Z]+)")


def first_move(episode, player: str) -> str:
    """The keyword of ``player``'s first legal move (``SEARCH``, ``ANSWER``, ``ASK``, ``ABSTAIN``), or ``other``."""
    for turn in episode.turns:
        if turn.player == player and not turn.illegal:
            m = MOVE.match(turn.action or "")
            return m.group(1) if m else "other"
    return "none"


def run_config(run_dir: Path):
    """The run's config, from its latest checkpoint's state."""
    from arena import checkpoint
    from arena.config import RunConfig

    last = checkpoint.latest(run_dir.parent, run_dir.name)
    if last is None:
        raise SystemExit(f"{run_dir}: no checkpoints/round_*/state.json (not a run directory?)")
    return RunConfig.model_validate(checkpoint.read_state(last)["config"])


def round_choices(episodes: list, labels: list[str], cfg) -> dict:
    """One round's figures per entry (see the module docstring)."""
    from arena.trainers.selfplay import rest_samples, trained_seats

    kept: set[tuple[str, str]] = set()
    groups: dict[str, set] = collections.defaultdict(set)
    groups_kept: dict[str, set] = collections.defaultdict(set)
    if cfg.trainer.recipe == "rest":
        seats = trained_seats(episodes, "main", cfg.trainer.return_mix, labels)
        samples, _ = rest_samples(seats, cfg.trainer)
        kept = {(s.episode_id, s.player) for s in samples}
        for s in seats:
            if s.player == "asker":
                groups[s.label].add(s.group)
                if (s.episode.episode_id, s.player) in kept:
                    groups_kept[s.label].add(s.group)
    out: dict = {}
    by_entry: dict[str, list] = collections.defaultdict(list)
    for ep, label in zip(episodes, labels):
        by_entry[label].append(ep)
    for label, eps in sorted(by_entry.items()):
        known = [ep for ep in eps if ep.metrics.get("known")]
        unknown = [ep for ep in eps if not ep.metrics.get("known")]

        def share(sel, key):
            return round(sum(ep.metrics.get(key, 0) > 0 for ep in sel) / len(sel), 4) if sel else None

        helper = [ep for ep in eps if any(ep.metrics.get(k, 0) > 0 for k in ep.metrics if k.startswith("searches/helper"))]
        row = {
            "episodes": len(eps),
            "asker_search_known": share(known, "searches/asker"),
            "asker_search_unknown": share(unknown, "searches/asker"),
            "helper_search": round(len(helper) / len(eps), 4),
            "group_return": round(sum(ep.group_return for ep in eps) / len(eps), 4),
        }
        if cfg.trainer.recipe == "rest":
            counts = collections.Counter(
                f"{'known' if ep.metrics.get('known') else 'unknown'}:{first_move(ep, 'asker')}" for ep in eps if (ep.episode_id, "asker") in kept
            )
            row["kept"] = dict(sorted(counts.items()))
            row["groups_kept"] = f"{len(groups_kept[label])}/{len(groups[label])}"
        out[label] = row
    return out


def choices(run_dir: Path) -> dict:
    from arena.records import Episode

    cfg = run_config(run_dir)
    rounds = []
    for path in sorted(run_dir.glob("episodes/train/round_*.jsonl")):
        episodes, labels = [], []
        for line in path.read_text().splitlines():
            record = json.loads(line)
            episodes.append(Episode.model_validate(record["episode"]))
            labels.append(record["entry"])
        rounds.append({"round": int(path.stem.split("_")[1]), "entries": round_choices(episodes, labels, cfg)})
    if not rounds:
        raise SystemExit(f"{run_dir}: no episodes/train/round_*.jsonl")
    return {"recipe": cfg.trainer.recipe, "rounds": rounds}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dirs", nargs="+", help="run directories (arena_runs/<name>/<run id>)")
    args = ap.parse_args(argv)
    report = {"benchmark": "training_choices", "runs": {d: choices(Path(d)) for d in args.run_dirs}}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
