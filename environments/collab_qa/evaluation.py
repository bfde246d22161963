"""Evaluating collaborative-QA policies: F1, searches and selective prediction (``arena eval``, the run report).

The point of Eisenstein et al. (2025) is what an agent trained in a group does
*alone*: this module plays every question of a split once, in one of two
settings of ``collab_qa-v0``, and scores the answers.

Settings
    ``isolated``       one agent alone with one search tool: for a question
                       whose answer lies in corpus ``d``, the game with
                       ``helpers=0, asker_tool=d, domain=d`` (SEARCH, then
                       ANSWER / ANSWER (unsure) / ABSTAIN).
    ``collaborative``  the default game: an asker and two helpers with their
                       tools, the same policy in every seat.

Each question is played once, with a seed derived from its index; model
policies decode greedily by default (``temperature=0``), so an evaluation is
reproducible.

Confidence of an answer
    The stated confidence of the final move: ``ANSWER`` 1.0, ``ANSWER
    (unsure)`` 0.5, abstaining (or running out of turns, or forfeiting) 0.0.
    A model policy also has a finer signal: the stated confidence times the
    probability it gave its own final move (the geometric mean of the move's
    token probabilities, from the sampler's logprobs). Bots state only.

Metrics (per policy, setting and split; ``correct`` = exact match with a gold answer)
    ``f1``, ``em``, ``searches`` (tool calls per question, every seat's),
    ``answered`` / ``hedged`` / ``abstained`` (rates of the final move),
    ``searches_known`` / ``searches_unknown`` (searches per question on facts
    the data marks known / not known, where it does; "srch K|U" in the
    table), and selective
    prediction of ``correct`` by the stated confidence:
    ``aurc``         area under the risk-coverage curve (lower is better);
    ``selective_auc`` area under the accuracy-coverage curve (higher is
                     better; equal to ``1 - aurc``);
    ``auroc``        of confidence against correctness (0.5 = no signal;
                     NaN when every answer is right or every one wrong);
    ``ece``          expected calibration error over 10 equal-width bins;
    and ``aurc_p`` / ``auroc_p`` / ``ece_p`` with the finer signal.

The risk-coverage curve. Sort the questions by confidence, most confident
first; a threshold at each distinct confidence value covers the questions at
or above it. Point k is (coverage_k, risk_k): the share covered and the error
rate among them. Tied confidences enter together, so the area is the step
function's: ``AURC = sum_k (coverage_k - coverage_{k-1}) * risk_k``, which
without ties is the usual mean of the risks at coverage 1/n, 2/n, ..., 1.

Baselines (``arena eval``): the run's model before any self-play (the
knowledge model, warm-started by imitation), the ``always_search`` and
``never_search`` bots, the action-supervised model (fine-tuned to search
exactly when its own closed-book answer is wrong), and any trained models
given by path. One table, printed and logged to MLflow with the per-question
results and one risk-coverage plot per setting and split.

The package registers two hooks of this module with the game: :func:`report`
(after ``arena run``: the run's collab_qa evaluation episodes before and after
self-play, read as QA results, logged and tabled) and :func:`eval_command`
(``arena eval CONFIG|MODEL_DIR [-o split=S ...] [-o setting=isolated|collaborative ...]``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arena.agents.base import Policy
from arena.environments.collab_qa.world import QuestionRecord
from arena.records import Episode, Matchup
from arena.registry import EvalRequest, GameReport, ReportInput
from arena.rollout import play_many
from arena.seeds import derive_seed

#: stated confidence of each outcome of the game
STATED_CONFIDENCE = {"answered": 1.0, "hedged": 0.5, "abstained": 0.0, "out_of_turns": 0.0, "forfeit": 0.0}


# ----- selective prediction: pure functions ------------------------------------------------------
def _arrays(confidence: Sequence[float], correct: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if c.shape != y.shape or c.ndim != 1:
        raise ValueError(f"confidence and correct must be 1-d and of one length, got {c.shape} and {y.shape}")
    if len(c) == 0:
        raise ValueError("no questions to score")
    return c, y


def risk_coverage(confidence: Sequence[float], correct: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The risk-coverage curve: (coverage [K], risk [K]), one point per distinct confidence, most confident first.

    confidence, correct: [N]; correct is 1 for a right answer and 0 for a wrong one (or in
    between for partial credit). Risk at a point is 1 - mean correctness of the covered questions.
    """
    c, y = _arrays(confidence, correct)
    order = np.argsort(-c, kind="stable")
    c, y = c[order], y[order]
    # the last index of each run of equal confidences closes one threshold
    ends = np.flatnonzero(np.r_[c[1:] != c[:-1], True])
    covered = ends + 1
    right = np.cumsum(y)[ends]
    return covered / len(c), 1.0 - right / covered


def aurc(confidence: Sequence[float], correct: Sequence[float]) -> float:
    """Area under the risk-coverage step curve (lower is better). [N], [N] -> scalar."""
    coverage, risk = risk_coverage(confidence, correct)
    return float(np.sum(np.diff(np.r_[0.0, coverage]) * risk))


def selective_auc(confidence: Sequence[float], correct: Sequence[float]) -> float:
    """Area under the accuracy-coverage step curve (higher is better): ``1 - aurc``."""
    return 1.0 - aurc(confidence, correct)


def auroc(confidence: Sequence[float], correct: Sequence[float]) -> float:
    """P(a right answer's confidence > a wrong one's), ties counting one half; NaN without both kinds.

    correct: [N] of 0/1 (anything >= 0.5 counts as right).
    """
    c, y = _arrays(confidence, correct)
    right, wrong = c[y >= 0.5], c[y < 0.5]
    if len(right) == 0 or len(wrong) == 0:
        return float("nan")
    greater = (right[:, None] > wrong[None, :]).sum()
    ties = (right[:, None] == wrong[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(right) * len(wrong)))


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[float], bins: int = 10) -> float:
    """Sum over equal-width confidence bins of (share of questions) x |accuracy - mean confidence|.

    Bin b holds confidences in [b/B, (b+1)/B); the last bin also holds 1.0.
    """
    c, y = _arrays(confidence, correct)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    index = np.minimum((np.clip(c, 0.0, 1.0) * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(index):
        sel = index == b
        total += sel.mean() * abs(y[sel].mean() - c[sel].mean())
    return float(total)


def selective_metrics(confidence: Sequence[float], correct: Sequence[float], suffix: str = "") -> dict[str, float]:
    """``aurc``, ``selective_auc``, ``auroc`` and ``ece`` (each name + ``suffix``)."""
    return {
        f"aurc{suffix}": aurc(confidence, correct),
        f"selective_auc{suffix}": selective_auc(confidence, correct),
        f"auroc{suffix}": auroc(confidence, correct),
        f"ece{suffix}": expected_calibration_error(confidence, correct),
    }


def move_probability(logprobs: Sequence[float]) -> float:
    """The geometric mean of a move's token probabilities: exp(mean logprob); 1.0 without logprobs."""
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else 1.0


# ----- playing a split -------------------------------------------------------------------------------
GAME = "collab_qa-v0"
SETTINGS = ("isolated", "collaborative")
#: game options evaluation sets itself, never taken from a run config: seats, tools and questions (per setting
#: and question), and ``redraw_unknown``, a training option (evaluation plays the data's values)
_SET_BY_EVALUATION = frozenset({"helpers", "helper_tools", "asker_tool", "domain", "split", "question_index", "redraw_unknown"})


@dataclass(frozen=True)
class QAResult:
    """One question played by one policy in one setting."""

    policy: str
    setting: str
    split: str
    question_id: str
    known: float | None  # 1/0 where the data marks the fact known / unknown
    outcome: str  # answered | hedged | abstained
    answer: str | None
    f1: float
    em: float
    searches: float
    confidence: float  # stated
    confidence_p: float  # stated x the final move's probability (models); stated (bots)
    reward: float = float("nan")  # the episode's shared return: answer score - search cost x searches


def base_game_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A run config's collab_qa options without the ones each setting and question set (seats, tools, split)."""
    return {k: v for k, v in kwargs.items() if k not in _SET_BY_EVALUATION}


def question_matchups(
    setting: str, split: str, policy_id: str, base: Mapping[str, Any], *, limit: int | None = None, seed: int = 0
) -> tuple[list[Matchup], list[QuestionRecord]]:
    """One matchup per question of ``split`` (the first ``limit``), in ``setting``, ``policy_id`` in every seat."""
    from arena.environments.collab_qa.rules import load_bank
    from arena.environments.collab_qa.world import WorldConfig

    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; settings: {', '.join(SETTINGS)}")
    world = base.get("world") or {}
    bank = load_bank(world if isinstance(world, WorldConfig) else WorldConfig.model_validate(world), base.get("data_dir"))
    questions = bank.questions(split)[:limit]
    if not questions:
        raise ValueError(f"no questions in split {split!r}; splits in the data: {sorted(map(str, bank.ds.splits()))}")
    matchups = []
    for i, q in enumerate(questions):
        seed_i = derive_seed(seed, SETTINGS.index(setting), i)
        if setting == "isolated":
            if q.domain not in bank.ds.corpora:
                raise ValueError(f"question {q.id} names no corpus (domain {q.domain!r}): the isolated setting searches the corpus holding the answer")
            index = bank.questions(split, q.domain).index(q)
            kwargs = {**base, "helpers": 0, "asker_tool": q.domain, "domain": q.domain, "split": split, "question_index": index}
            seats = {"asker": policy_id}
        else:
            kwargs = {**base, "split": split, "question_index": i}
            helpers = int(base.get("helpers", 2))
            seats = {p: policy_id for p in ("asker", *(f"helper_{h}" for h in range(helpers)))}
        matchups.append(Matchup(game=GAME, seed=seed_i, seats=seats, game_kwargs=_jsonable(kwargs)))
    return matchups, questions


def _jsonable(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v) for k, v in kwargs.items()}


def result_of(episode: Episode, question: QuestionRecord | str, policy: str, setting: str, split: str) -> QAResult:
    """Read one played question (a record, or just its id): outcome, answer, scores and confidences."""
    m = episode.metrics
    outcome = "answered" if m.get("answered") else "hedged" if m.get("hedged") else "abstained"
    final = next((t for t in reversed(episode.turns) if t.player == "asker" and not t.illegal), None)
    stated = STATED_CONFIDENCE[outcome]
    p = move_probability(final.logprobs) if final is not None else 1.0
    answer = None
    if outcome != "abstained" and final is not None:
        answer = final.action.split(":", 1)[-1].strip().splitlines()[0] if ":" in final.action else final.action
    return QAResult(
        policy=policy,
        setting=setting,
        split=split,
        question_id=question if isinstance(question, str) else question.id,
        known=m.get("known"),
        outcome=outcome,
        answer=answer,
        f1=float(m["f1"]),
        em=float(m["em"]),
        searches=float(m["searches"]),
        confidence=stated,
        confidence_p=stated * p,
        reward=float(episode.returns.get("asker", episode.group_return)),
    )


def summarize(results: Sequence[QAResult]) -> dict[str, float]:
    """The metrics of the module docstring over ``results`` (one policy, setting and split)."""
    if not results:
        raise ValueError("no results to summarize")
    em = [r.em for r in results]
    out = {
        "n": float(len(results)),
        "f1": float(np.mean([r.f1 for r in results])),
        "em": float(np.mean(em)),
        "searches": float(np.mean([r.searches for r in results])),
        "answered": float(np.mean([r.outcome == "answered" for r in results])),
        "hedged": float(np.mean([r.outcome == "hedged" for r in results])),
        "abstained": float(np.mean([r.outcome == "abstained" for r in results])),
        "reward": float(np.mean([r.reward for r in results])),
    }
    for tag, flag in (("known", 1.0), ("unknown", 0.0)):
        sub = [r.searches for r in results if r.known == flag]
        if sub:
            out[f"searches_{tag}"] = float(np.mean(sub))
    out.update(selective_metrics([r.confidence for r in results], em))
    out.update(selective_metrics([r.confidence_p for r in results], em, suffix="_p"))
    return out


def evaluate(
    policies: Mapping[str, Policy],
    settings: Sequence[str],
    splits: Sequence[str],
    base: Mapping[str, Any],
    *,
    limit: int | None = None,
    seed: int = 0,
    concurrency: int = 64,
    on_episode: Callable[[Episode], None] | None = None,
) -> list[QAResult]:
    """Every policy alone (isolated) or in every seat (collaborative), on every question of each split."""
    plan = []
    for name, policy in policies.items():
        for setting in settings:
            for split in splits:
                matchups, questions = question_matchups(setting, split, policy.policy_id, base, limit=limit, seed=seed)
                plan += [(m, q, name, setting, split) for m, q in zip(matchups, questions)]
    by_id = {p.policy_id: p for p in policies.values()}
    if len(by_id) != len(policies):
        raise ValueError("every evaluated policy needs its own policy_id")
    episodes = asyncio.run(
        play_many(
            [m for m, *_ in plan],
            by_id,
            concurrency=concurrency,
            on_episode=on_episode,
            episode_ids=[f"{name}-{setting}-{split}-{q.id}" for _, q, name, setting, split in plan],
        )
    )
    return [result_of(ep, q, name, setting, split) for ep, (_, q, name, setting, split) in zip(episodes, plan)]


def summaries(results: Sequence[QAResult]) -> dict[tuple[str, str, str], dict[str, float]]:
    """(policy, setting, split) -> :func:`summarize`, in the order first seen."""
    groups: dict[tuple[str, str, str], list[QAResult]] = {}
    for r in results:
        groups.setdefault((r.policy, r.setting, r.split), []).append(r)
    return {k: summarize(v) for k, v in groups.items()}


def run_results(episodes: Sequence[Episode], labels: Sequence[str], tag: str) -> list[QAResult]:
    """The collab_qa episodes of an ``arena run`` evaluation as results: policy ``tag`` (before / after),
    setting ``isolated`` (no helpers) or ``collaborative``, split = the game entry's label."""
    out = []
    for ep, label in zip(episodes, labels):
        if not ep.matchup.game.startswith("collab_qa-"):
            continue
        setting = "isolated" if ep.matchup.game_kwargs.get("helpers", 2) == 0 else "collaborative"
        out.append(result_of(ep, ep.episode_id, tag, setting, label))
    return out


_CHANGE_METRICS = (
    ("reward", "reward", "{:.2f}"),
    ("F1", "f1", "{:.2f}"),
    ("srch/q", "searches", "{:.2f}"),
    ("srch known", "searches_known", "{:.2f}"),
    ("srch unknown", "searches_unknown", "{:.2f}"),
    ("hedge%", "hedged", "{:.0%}"),
    ("abstain%", "abstained", "{:.0%}"),
    ("selAUC↑", "selective_auc", "{:.2f}"),
    ("AUROC", "auroc", "{:.2f}"),
)


def before_after_qa_table(before: Sequence[QAResult], after: Sequence[QAResult]):
    """Per game entry (the ``split`` of :func:`run_results`): each metric before -> after training."""
    from rich.table import Table

    b, a = summaries(before), summaries(after)
    title = (
        "Collaborative QA before -> after self-play (same evaluation seeds; selective AUC by stated confidence)"
        if after
        else "Collaborative QA evaluation (selective AUC by stated confidence)"
    )
    table = Table(title=title)
    for col in ("entry", "setting", "n", *(h for h, _, _ in _CHANGE_METRICS)):
        table.add_column(col, justify="left" if col in ("entry", "setting") else "right", no_wrap=True)
    for (_, setting, label), sb in b.items():
        sa = a.get(("after", setting, label))
        cells = []
        for _, key, fmt in _CHANGE_METRICS:

            def show(v: float, fmt: str = fmt) -> str:
                return "-" if math.isnan(v) else fmt.format(v)

            cells.append(f"{show(sb.get(key, math.nan))} -> {show(sa.get(key, math.nan))}" if sa else show(sb.get(key, math.nan)))
        table.add_row(label, setting, str(int(sb["n"])), *cells)
    return table


def log_run_results(before: Sequence[QAResult], after: Sequence[QAResult], step: int | None = None) -> None:
    """``qa/<entry>/<before|after>/<metric>`` metrics (at ``step``), the per-question results and one
    risk-coverage plot per entry (before and after on one figure) to the active MLflow run."""
    import matplotlib.pyplot as plt
    import mlflow

    from arena.reporting import metric_name

    rows = summaries([*before, *after])
    metrics = {metric_name(f"qa/{label}/{tag}/{k}"): v for (tag, _, label), s in rows.items() for k, v in s.items() if not math.isnan(v)}
    mlflow.log_metrics(metrics, step=step)
    mlflow.log_dict([asdict(r) for r in [*before, *after]], "qa_eval/run_results.json")
    for setting, label in dict.fromkeys((r.setting, r.split) for r in before):
        fig = risk_coverage_figure([*before, *after], setting, label)
        mlflow.log_figure(fig, f"qa_eval/risk_coverage_{label}.png")
        plt.close(fig)


def fixed_strategy_rows(inp: ReportInput) -> dict[tuple[str, str], dict[str, float]]:
    """(isolated entry, model) -> the model's own fixed strategies on every question of the entry's split and
    corpus (:func:`~arena.environments.collab_qa.reading.forced_answers`, greedy): never search, always search
    once, and the oracle that searches exactly where the data marks the fact unknown, with the reward and F1
    each scores: what a learned choice of when to search must beat. The models are ``inp.models``' ``start``
    (before) and the trained policies seated in the entries (after; a LoRA adapter is left out)."""
    from arena.environments.collab_qa.reading import fixed_strategy_rewards, forced_answers
    from arena.environments.collab_qa.rules import CollabQAGame, load_bank

    models = {"before": inp.models["start"]} if "start" in inp.models else {}
    trained = sorted({pid for ep in inp.after for pid in ep.matchup.seats.values()} & set(inp.models))
    models.update({f"after ({pid})" if len(trained) > 1 else "after": inp.models[pid] for pid in trained})
    models = {k: v for k, v in models.items() if (Path(v) / "config.json").is_file()}
    out: dict[tuple[str, str], dict[str, float]] = {}
    for label, kwargs in inp.entries.items():
        if kwargs.get("helpers", 2) != 0 or not kwargs.get("domain") or not models:
            continue
        cfg = CollabQAGame.Config.model_validate({k: v for k, v in kwargs.items() if k in CollabQAGame.Config.model_fields})
        world = cfg.world
        questions = load_bank(world, cfg.data_dir).questions(cfg.split, cfg.domain)
        if not questions or any(q.meta.get("known") is None for q in questions):
            continue  # no split here, or data that does not say what the model knows: no oracle
        known_share = float(np.mean([bool(q.meta["known"]) for q in questions]))
        for name, path in models.items():
            answers = forced_answers(path, world, questions, game_kwargs={k: v for k, v in base_game_kwargs(kwargs).items() if k not in ("world", "data_dir")})
            rewards = fixed_strategy_rewards(answers, cfg.search_cost)
            never_f1 = float(np.mean([a.memory_f1 for a in answers]))
            always_f1 = float(np.mean([a.read_f1 for a in answers]))
            oracle_f1 = float(np.mean([a.memory_f1 if a.known else a.read_f1 for a in answers]))
            out[(label, name)] = {
                "n": float(len(questions)),
                "known_share": known_share,
                "never_search": rewards["reward_never_search"],
                "always_search": rewards["reward_always_search"],
                "oracle": rewards["reward_oracle"],
                "f1_never_search": never_f1,
                "f1_always_search": always_f1,
                "f1_oracle": oracle_f1,
            }
    return out


def fixed_strategy_table(rows: Mapping[tuple[str, str], Mapping[str, float]], played: Mapping[tuple[str, str, str], Mapping[str, float]]):
    """The played reward beside the model's own fixed strategies' (:func:`fixed_strategy_rows`), per isolated entry."""
    from rich.table import Table

    table = Table(
        title="Alone with a tool: the reward played, and the model's own fixed strategies (reward = F1 - search cost; oracle: search exactly where unknown)"
    )
    for col in ("entry", "model", "n", "played", "never search", "always search", "oracle", "known share"):
        table.add_column(col, justify="left" if col in ("entry", "model") else "right", no_wrap=True)
    for (label, name), r in rows.items():
        tag = "before" if name == "before" else "after"
        s = played.get((tag, "isolated", label))
        table.add_row(
            label,
            name,
            str(int(r["n"])),
            f"{s['reward']:.2f}" if s else "-",
            *(f"{r[k]:.2f} (F1 {r['f1_' + k]:.2f})" for k in ("never_search", "always_search", "oracle")),
            f"{r['known_share']:.0%}",
        )
    return table


def report(inp: ReportInput) -> GameReport | None:
    """The game's ``report`` hook, called after ``arena run`` inside its MLflow run: the run's collab_qa
    evaluation episodes before (and, where the run trained, after) self-play read as QA results
    (:func:`run_results`), logged at ``inp.step`` (:func:`log_run_results`), and their table
    (:func:`before_after_qa_table`). None when no collab_qa episode was evaluated."""
    before = run_results(inp.before, inp.labels_before, "before")
    after = run_results(inp.after, inp.labels_after, "after")
    if not before and not after:
        return None
    log_run_results(before, after, step=inp.step)
    renderables: list[Any] = [before_after_qa_table(before, after)]
    fixed = fixed_strategy_rows(inp)
    metrics: dict[str, float] = {}
    if fixed:
        renderables.append(fixed_strategy_table(fixed, summaries([*before, *after])))
        from arena.reporting import metric_name

        for (label, name), r in fixed.items():
            for k in ("never_search", "always_search", "oracle"):
                metrics[metric_name(f"qa/{label}/{name}/reward_{k}")] = r[k]  # logged by the run
    return GameReport(renderables=renderables, metrics=metrics)


# ----- the table, the plots, MLflow ------------------------------------------------------------------
_COLUMNS = (
    ("reward", "reward", "{:.2f}"),
    ("F1", "f1", "{:.2f}"),
    ("EM", "em", "{:.2f}"),
    ("srch/q", "searches", "{:.2f}"),
    ("srch K|U", None, ""),
    ("ans|hdg|abs%", None, ""),
    ("AURC↓", "aurc", "{:.2f}"),
    ("selAUC↑", "selective_auc", "{:.2f}"),
    ("AUROC", "auroc", "{:.2f}"),
    ("ECE↓", "ece", "{:.2f}"),
    ("AUROC p", "auroc_p", "{:.2f}"),
)


def summary_table(table_rows: Mapping[tuple[str, str, str], Mapping[str, float]], title: str = "Collaborative QA evaluation"):
    """One row per (policy, setting, split) with the metrics of :func:`summarize`, a section per setting and split."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False, collapse_padding=True)
    for col in ("setting", "split", "policy", "n"):
        table.add_column(col, justify="right" if col == "n" else "left", no_wrap=True)
    for header, _, _ in _COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    order = sorted(table_rows, key=lambda k: (SETTINGS.index(k[1]) if k[1] in SETTINGS else 9, k[2]))
    last = None
    for key in order:
        policy, setting, split = key
        s = table_rows[key]
        if last is not None and last != (setting, split):
            table.add_section()
        first = last != (setting, split)
        last = (setting, split)
        cells = []
        for _, metric, fmt in _COLUMNS:
            if metric is None:
                continue
            v = s.get(metric, float("nan"))
            cells.append("-" if math.isnan(v) else fmt.format(v))
        known = f"{s['searches_known']:.2f}|{s['searches_unknown']:.2f}" if "searches_known" in s and "searches_unknown" in s else "-"
        rates = f"{s['answered']:.0%}|{s['hedged']:.0%}|{s['abstained']:.0%}".replace("%", "")
        table.add_row(setting if first else "", split if first else "", policy, str(int(s["n"])), *cells[:4], known, rates, *cells[4:])
    return table


def risk_coverage_figure(results: Sequence[QAResult], setting: str, split: str):
    """One risk-coverage step curve per policy (stated confidence), AURC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    policies = list(dict.fromkeys(r.policy for r in results if r.setting == setting and r.split == split))
    for policy in policies:
        rs = [r for r in results if r.policy == policy and r.setting == setting and r.split == split]
        conf, em = [r.confidence for r in rs], [r.em for r in rs]
        coverage, risk = risk_coverage(conf, em)
        ax.plot(np.r_[0.0, coverage], np.r_[risk[0], risk], drawstyle="steps-pre", marker=".", label=f"{policy} (AURC {aurc(conf, em):.3f})")
    ax.set_xlabel("coverage (share of questions answered at or above a confidence)")
    ax.set_ylabel("risk (error rate among them)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"risk-coverage: {setting}, {split} split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def log_to_mlflow(results: Sequence[QAResult], table_rows: Mapping[tuple[str, str, str], Mapping[str, float]]) -> None:
    """Metrics ``eval/<setting>/<split>/<policy>/<metric>``, the per-question results, one plot per setting and split.
    Needs an active MLflow run."""
    import matplotlib.pyplot as plt
    import mlflow

    from arena.reporting import metric_name

    metrics = {}
    for (policy, setting, split), s in table_rows.items():
        for k, v in s.items():
            if not math.isnan(v):
                metrics[metric_name(f"eval/{setting}/{split}/{policy}/{k}")] = v
    mlflow.log_metrics(metrics)
    mlflow.log_dict([asdict(r) for r in results], "qa_eval/results.json")
    mlflow.log_dict([{"policy": p, "setting": se, "split": sp, **s} for (p, se, sp), s in table_rows.items()], "qa_eval/summary.json")
    for setting, split in dict.fromkeys((r.setting, r.split) for r in results):
        fig = risk_coverage_figure(results, setting, split)
        mlflow.log_figure(fig, f"qa_eval/risk_coverage_{setting}_{split}.png")
        plt.close(fig)


# ----- arena eval ------------------------------------------------------------------------------------
#: the run config of a model directory that has none stored with it: the quick start (its world and scoring)
def _default_config() -> dict[str, Any]:
    from arena.config import QUICK_START

    return QUICK_START


BOTS = ("always_search", "never_search")


@dataclass
class EvalReport:
    results: list[QAResult]
    table: dict[tuple[str, str, str], dict[str, float]]
    #: policy name -> model directory (model policies only)
    models: dict[str, str]
    run_id: str | None = None


def _checkpoint_state(model_dir: Path) -> dict | None:
    """The ``state.json`` of the checkpoint holding ``model_dir`` (``.../round_N/policies/<id>``), if any."""
    from arena import checkpoint

    for parent in list(model_dir.resolve().parents)[:3]:
        if (parent / checkpoint.STATE).is_file():
            return checkpoint.read_state(parent)
    return None


def model_name(model_dir: Path) -> str:
    """``main@round_00004`` for a checkpoint's policy, else the directory's name."""
    model_dir = model_dir.resolve()
    if model_dir.parent.name == "policies":
        return f"{model_dir.name.replace('__', '/')}@{model_dir.parent.parent.name}"
    return model_dir.name


def eval_setup(target: str, overrides: Sequence[str] = ()):
    """The run config and the trained models named by ``target``: a YAML run config (no models),
    or a model directory (that model; the config stored with its checkpoint, else the quick start's)."""
    from arena.config import ConfigError, RunConfig, load_config

    path = Path(target)
    if not path.is_dir():
        return load_config(path, list(overrides)), []
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: not a model directory (no config.json) and not a config file")
    if overrides:
        raise ConfigError("key=value overrides go with a CONFIG.yaml: arena eval CONFIG.yaml key=value --model MODEL_DIR")
    state = _checkpoint_state(path)
    cfg = RunConfig.model_validate(state["config"] if state else _default_config())
    return cfg, [(model_name(path), str(path))]


def qa_game_kwargs(cfg) -> dict[str, Any]:
    """The options of the run config's first collab_qa entry, less seats, tools and split; the world of a
    knowledge warm start when the entry names none."""
    from arena.config import ConfigError
    from arena.environments.collab_qa.knowledge import KnowledgeConfig

    entries = [g for g in cfg.games if g.id == GAME]
    if not entries:
        raise ConfigError(f"the config plays no {GAME} game: arena eval evaluates collaborative-QA policies")
    base = base_game_kwargs(entries[0].kwargs)
    if isinstance(cfg.model.warm_start, KnowledgeConfig) and "world" not in base and "data_dir" not in base:
        base["world"] = cfg.model.warm_start.world.model_dump(mode="json")
    return base


def demonstration_game(cfg) -> dict[str, Any]:
    """The run config's collab_qa options that a baseline's demonstrations are played with (its search
    cost, scores, ...): :func:`qa_game_kwargs` less the world and the data, which the warm start names."""
    return {k: v for k, v in qa_game_kwargs(cfg).items() if k not in ("world", "data_dir")}


def run_eval(
    target: str,
    overrides: Sequence[str] = (),
    *,
    models: Sequence[str] = (),
    splits: Sequence[str] = ("test", "ood"),
    settings: Sequence[str] = SETTINGS,
    limit: int | None = None,
    baselines: bool = True,
    temperature: float = 0.0,
    console=None,
) -> EvalReport:
    """``arena eval``: the baselines and the given models on every question of ``splits`` in ``settings``;
    prints the table and logs everything to a new MLflow run."""
    import mlflow
    from rich.console import Console

    from arena import tracking
    from arena.agents.catalog import make_fixed_policy
    from arena.agents.llm import LLMAgent
    from arena.config import ConfigError
    from arena.engines.base import SamplingParams
    from arena.engines.hf import HFEngine
    from arena.environments.collab_qa.knowledge import KnowledgeConfig, cached_action_supervised
    from arena.models import run_model_path
    from arena.tiny import default_cache_dir

    console = console or Console()
    for s in settings:
        if s not in SETTINGS:
            raise ConfigError(f"unknown setting {s!r}; settings: {', '.join(SETTINGS)}")
    cfg, trained = eval_setup(target, overrides)
    for m in models:
        if not (Path(m) / "config.json").is_file():
            raise ConfigError(f"--model {m}: not a model directory (no config.json)")
        trained.append((model_name(Path(m)), str(m)))
    base = qa_game_kwargs(cfg)
    # every split and setting read now: a split the data lacks fails before any model is built
    questions = sum(len(question_matchups(s, sp, "x", base, limit=limit)[0]) for s in settings for sp in splits)
    sampling = SamplingParams(max_new_tokens=cfg.sampling.max_new_tokens, temperature=temperature)

    paths: dict[str, str] = {}
    if baselines:
        with console.status("Preparing the baseline models (built once and cached)"):
            start = run_model_path(cfg)
            paths["warm_start"] = start
            if isinstance(cfg.model.warm_start, KnowledgeConfig):
                supervised = cached_action_supervised(start, cfg.model.warm_start, default_cache_dir(), demonstration_game(cfg))
                paths["action_supervised"] = str(supervised)
    paths.update(dict(trained))
    if not paths and not baselines:
        raise ConfigError("nothing to evaluate: give --model MODEL_DIR, or keep the baselines")

    def agent(name: str, path: str) -> LLMAgent:
        engine = HFEngine(path, device=cfg.model.device, dtype=cfg.model.dtype, max_batch_size=cfg.engine.max_batch_size)
        return LLMAgent(engine, name, sampling=sampling, history_turns=cfg.agent.history_turns, max_prompt_tokens=cfg.agent.max_prompt_tokens)

    policies: dict[str, Policy] = {}
    if baselines:
        policies["warm_start"] = agent("warm_start", paths["warm_start"])
        for bot in BOTS:
            policies[bot] = make_fixed_policy(f"scripted/{bot}", GAME)
        if "action_supervised" in paths:
            policies["action_supervised"] = agent("action_supervised", paths["action_supervised"])
    for name, path in trained:
        policies[name] = agent(name, path)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = questions * len(policies)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("evaluation: questions", total=total)
        results = evaluate(
            policies, settings, splits, base, limit=limit, seed=cfg.seed, concurrency=cfg.rollout.concurrency, on_episode=lambda ep: progress.advance(task)
        )
    rows = summaries(results)
    console.print(summary_table(rows, title=f"Collaborative QA evaluation ({cfg.name}; confidence: stated, (p): x move probability)"))

    tracking.quiet_mlflow()
    mlflow.set_tracking_uri(tracking.tracking_uri(cfg.tracking.uri))
    mlflow.set_experiment(cfg.tracking.experiment)
    with mlflow.start_run(run_name=f"eval {cfg.name}") as active:
        mlflow.log_params(
            {
                "eval/splits": ",".join(splits),
                "eval/settings": ",".join(settings),
                "eval/limit": str(limit),
                "eval/temperature": temperature,
                **{f"eval/model/{k}": v for k, v in paths.items()},
            }
        )
        log_to_mlflow(results, rows)
        run_id = active.info.run_id
    console.print(f"Logged to MLflow run [bold]{run_id}[/bold] in {mlflow.get_tracking_uri()} (risk-coverage plots under qa_eval/)")
    return EvalReport(results=results, table=rows, models=paths, run_id=run_id)


#: ``arena eval``'s options for this game (``-o key=value``, each repeatable) and their defaults
EVAL_OPTIONS: dict[str, tuple[str, ...]] = {"split": ("test", "ood"), "setting": SETTINGS}


def eval_options(options: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str]]:
    """(splits, settings) from ``arena eval``'s ``-o split=S -o setting=T`` (defaults: test and ood, both
    settings); raises ValueError naming an unknown option or setting."""
    unknown = sorted(set(options) - set(EVAL_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown option {', '.join(map(repr, unknown))} for {GAME}; its options: -o split=NAME (repeatable; "
            f"default: {' and '.join(EVAL_OPTIONS['split'])}), -o setting={'|'.join(SETTINGS)} (repeatable; default: both)"
        )
    splits = list(dict.fromkeys(options.get("split") or EVAL_OPTIONS["split"]))
    settings = list(dict.fromkeys(options.get("setting") or EVAL_OPTIONS["setting"]))
    for setting in settings:
        if setting not in SETTINGS:
            raise ValueError(f"unknown setting {setting!r}; settings: {', '.join(SETTINGS)}")
    if any(not split.strip() for split in splits):
        raise ValueError("-o split= needs a split name, e.g. -o split=test")
    return splits, settings


def eval_command(request: EvalRequest, console=None) -> None:
    """The game's ``evaluate`` hook, ``arena eval``: :func:`run_eval` with the request's target, overrides,
    models, limit, baselines and temperature, and the splits and settings of its options (:func:`eval_options`).
    Raises ValueError (a :class:`arena.config.ConfigError` among them) for input it cannot evaluate."""
    if request.limit is not None and request.limit < 1:
        raise ValueError(f"limit must be at least 1, got {request.limit}")
    splits, settings = eval_options(request.options)
    run_eval(
        request.target,
        request.overrides,
        models=request.models,
        splits=splits,
        settings=settings,
        limit=request.limit,
        baselines=request.baselines,
        temperature=request.temperature,
        console=console,
    )
