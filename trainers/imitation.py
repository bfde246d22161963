"""Warm start: behaviour cloning of scripted bots before any reinforcement learning.

A tiny, randomly initialised model writes almost only illegal moves: every
turn is re-asked and then forfeited, so RL sees nothing but the forfeit
penalty and has no signal to climb. LMRL-Gym (Abdulhai et al., 2023) trains
its policies by behaviour cloning on scripted or human data before RL for the
same reason. Here the teachers are Arena's scripted bots: they play the
shipped games against each other, every legal move they make becomes a
(prompt, target) pair, and the model is fine-tuned to write the bot's move
after the prompt the LLM agent would show it. The result plays legal,
sensible moves; RL then has something to improve on.

Reads top to bottom: config, demonstrations (episodes), examples (token ids),
the training loop, then the entry points that load, train and save a model.

    path = cached_warm_start(tiny_model_path, ImitationConfig(), cache_dir)
    engine = HFEngine(path)
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic
import torch

from arena.agents.base import PlayerView
from arena.agents.catalog import make_fixed_policy
from arena.records import Episode, Matchup
from arena.rollout import play_many
from arena.seeds import derive_seed
from arena.tiny import build_once

#: (game id, {player: policy id}); policy ids are "scripted/<bot>" or "random"
Seating = tuple[str, dict[str, str]]

META_FILE = "arena_warm_start.json"
END_TOKEN = "<|end|>"


def default_seatings(games: Sequence[str]) -> list[Seating]:
    """The demonstrations the run's games declare (``arena.register(..., demonstrations=...)``), game by
    game in the order the run lists them (each seating's demonstrations are seeded by its place in the
    list); a game that declares none contributes every seating of its bots against each other, up to 64."""
    from arena.registry import make, spec

    out: list[Seating] = []
    for game in dict.fromkeys(games):
        s = spec(game)
        if s.demonstrations:
            out += [(game, dict(seats)) for seats in s.demonstrations]
            continue
        players = list(make(game).possible_agents)
        bots = [f"scripted/{b}" for b in s.bots]
        out += [(game, dict(zip(players, combo))) for combo in itertools.islice(itertools.product(bots, repeat=len(players)), 64)]
    return out


class ImitationConfig(pydantic.BaseModel):
    """Behaviour cloning of scripted bots. The defaults train the tiny model in 1-2 minutes on two
    CPU cores and take its illegal-move rate from about 0.93 to under 0.1 in both shipped games."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    #: names this warm start in a run config's ``model.warm_start``
    recipe: Literal["imitation"] = "imitation"
    #: optimiser steps; the tiny model's loss flattens around 0.3 (the bots' own randomness) by here
    steps: int = pydantic.Field(300, gt=0)
    #: examples per step
    batch_size: int = pydantic.Field(32, gt=0)
    #: high for fine-tuning, but the default model is tiny and starts from random weights
    lr: float = pydantic.Field(3e-3, gt=0)
    weight_decay: float = pydantic.Field(0.0, ge=0)
    #: prompts longer than this (in tokens, target excluded) keep their end, where the question is
    max_len: int = pydantic.Field(512, gt=0)
    #: weight of next-token loss on the prompt beside the target's (0: the target alone). A dense signal:
    #: predicting a name or value the prompt already stated trains the copying that reading needs
    prompt_loss: float = pydantic.Field(0.0, ge=0)
    #: seeds the demonstration episodes and the batch order
    seed: int = 0
    #: what the bots play to make the demonstrations; none = the seatings the run's games declare
    seatings: list[Seating] | None = pydantic.Field(None, min_length=1)
    #: episodes played per seating (each with its own seed)
    episodes_per_seating: int = pydantic.Field(4, gt=0)


# ----- demonstrations and examples ------------------------------------------------------------


def demonstrations(seatings: Sequence[Seating], episodes_per_seating: int, seed: int) -> list[Episode]:
    """Scripted play of every seating, ``episodes_per_seating`` times each, seeds derived from ``seed``."""
    matchups = [
        Matchup(game=game, seed=derive_seed(seed, i, k), seats=dict(seats)) for i, (game, seats) in enumerate(seatings) for k in range(episodes_per_seating)
    ]

    def pool(m: Matchup) -> dict[str, Any]:
        return {pid: make_fixed_policy(pid, m.game) for pid in set(m.seats.values())}

    return asyncio.run(play_many(matchups, pool, concurrency=256))


def imitation_examples(
    episodes: Iterable[Episode],
    tokenizer: Any,
    *,
    players: set[str] | None = None,
    render: Callable[[PlayerView], list[int]],
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) for every legal turn of ``players`` (all players when None).

    The prompt is ``render`` of the view the turn was played from (pass an
    ``LLMAgent``'s ``prompt_ids`` so training sees exactly the prompts of play);
    the view's history holds that player's earlier turns, illegal ones included,
    as in :func:`~arena.rollout.play_episode`. The target is the bot's text
    tokenised, then the end-of-turn token: the bots wrote text, not tokens, so
    tokenising it is the only way to get a supervised target.
    """
    end_id = end_token_id(tokenizer)
    out = []
    for ep in episodes:
        history: dict[str, list[tuple[str, str]]] = {}
        for turn in ep.turns:
            past = history.setdefault(turn.player, [])
            if not turn.illegal and (players is None or turn.player in players):
                view = PlayerView(
                    game=ep.matchup.game,
                    player=turn.player,
                    observation=turn.observation,
                    history=list(past),
                    turn=turn.index,
                )
                target = list(tokenizer.encode(turn.action, add_special_tokens=False)) + [end_id]
                out.append((list(render(view)), target))
            past.append((turn.observation, turn.action))
    return out


def end_token_id(tokenizer: Any) -> int:
    """Arena's ``<|end|>`` when the tokenizer has it (the tiny model), else its eos token."""
    end = tokenizer.convert_tokens_to_ids(END_TOKEN)
    if isinstance(end, int) and end != tokenizer.unk_token_id:
        return end
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has neither <|end|> nor an eos token to end a target with")
    return int(tokenizer.eos_token_id)


# ----- the training loop ------------------------------------------------------------------------


def collate(examples: Sequence[tuple[list[int], list[int]]], max_len: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels``, each [B, T].

    ``labels`` is -100 on the prompt and the padding, so only target tokens are
    scored. A prompt longer than ``max_len`` keeps its last ``max_len`` tokens.
    """
    rows = [(p[-max_len:], t) for p, t in examples]
    width = max(len(p) + len(t) for p, t in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, t) in enumerate(rows):
        n = len(p) + len(t)
        input_ids[i, :n] = torch.tensor(p + t, dtype=torch.long)
        mask[i, :n] = 1
        labels[i, len(p) : n] = torch.tensor(t, dtype=torch.long)
    return input_ids, mask, labels


def predicting_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions t whose next token (t + 1) is a target in some row. labels [B, T] -> [K], ascending.

    Only these positions need logits: at this size the vocabulary projection
    over every prompt position would cost as much as the rest of the model.
    """
    return (labels[:, 1:] != -100).any(0).nonzero().squeeze(-1)


def target_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over target tokens, their mean (or ``reduction="sum"``). logits [B, K, V]; targets [B, K], -100 where not scored."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction=reduction)


def prompt_targets(input_ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token targets on the prompt alone, [B, T - 1]: -100 where the next token is the target's or padding."""
    nxt = input_ids[:, 1:].clone()
    nxt[(mask[:, 1:] == 0) | (labels[:, 1:] != -100)] = -100
    return nxt


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Endless batches of indices into ``n`` examples; each pass over the data is a fresh shuffle.

    Batches mix games and dialogue stages. Grouping rows of similar length
    would pad less (a one-letter matrix turn pads to the longest negotiation
    prompt), but in single runs on the tiny model it left about twice as many
    illegal negotiation moves for the same number of steps. So batches stay
    mixed, and :func:`batch_step` saves the padding inside each one instead.
    """
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for j in range(0, max(n - batch_size, 0) + 1, batch_size):
            yield order[j : j + batch_size]


#: what one more forward and backward pass costs, in token positions: :func:`length_chunks` splits a batch
#: only where the padding it saves is worth more. Measured on the collaborative-QA model (128 wide), one
#: thread: a pass over one row of 64 tokens costs 0.008-0.012 s, as much as 65-120 positions beyond its
#: own 64 inside a 32 x 64 batch (benchmarks/imitation_chunks.py, ``pass_overhead_positions``, two runs)
CHUNK_OVERHEAD = 128


def length_chunks(lengths: Sequence[int], overhead: int | None = None) -> list[list[int]]:
    """A batch's rows (indices into ``lengths``) in chunks of similar length, shortest first, that
    minimise the padded positions (each chunk pads to its longest row) plus ``overhead`` per chunk.

    One padded batch of a 60-token closed-book question and a 400-token game prompt computes 400
    positions for each; the chunks compute each about as long as it is. The batch stays the batch
    (:func:`batch_step` sums the chunks' gradients), so this saves time without changing training.
    """
    overhead = CHUNK_OVERHEAD if overhead is None else overhead
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0.0] + [math.inf] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        width = lengths[order[j - 1]]  # the longest of rows i..j-1
        for i in range(j):
            cost = best[i] + width * (j - i) + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    chunks, j = [], n
    while j > 0:
        chunks.append(order[cut[j] : j])
        j = cut[j]
    return chunks[::-1]


def batch_step(
    model: Any, rows: Sequence[tuple[list[int], list[int]]], max_len: int, pad_id: int, device: Any, *, prompt_loss: float = 0.0, scale: float = 1.0
) -> torch.Tensor:
    """Back-propagate ``scale`` times the batch's loss (the mean cross-entropy over its target tokens, plus
    ``prompt_loss`` times the mean over its prompt tokens, prompts cut to their last ``max_len`` tokens)
    through ``model``, chunk by chunk (:func:`length_chunks`); returns the target loss, detached. The
    gradients add to those already there, and are those of the batch padded as one, up to rounding."""
    rows = [(p[-max_len:], t) for p, t in rows]
    n_target = sum(len(t) for _, t in rows)
    n_prompt = sum(max(len(p) - 1, 0) for p, _ in rows)
    scored_sum = torch.zeros((), device=device)
    for chunk in length_chunks([len(p) + len(t) for p, t in rows]):
        input_ids, mask, labels = (x.to(device) for x in collate([rows[i] for i in chunk], max_len, pad_id))
        if prompt_loss > 0:
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[:, :-1]
            scored = target_loss(logits, labels[:, 1:], reduction="sum")
            loss = scored / n_target + prompt_loss * target_loss(logits, prompt_targets(input_ids, mask, labels), reduction="sum") / max(n_prompt, 1)
        else:
            keep = predicting_positions(labels)
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits
            scored = target_loss(logits, labels[:, keep + 1], reduction="sum")
            loss = scored / n_target
        (loss * scale if scale != 1.0 else loss).backward()
        scored_sum = scored_sum + scored.detach()
    return scored_sum / n_target


def train_imitation(
    model: Any,
    examples: Sequence[tuple[list[int], list[int]]],
    cfg: ImitationConfig,
    *,
    pad_id: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Fine-tune ``model`` in place on ``examples``; returns the loss of every step.

    Batches come from :func:`shuffled_batches` with a generator seeded by
    ``cfg.seed`` (never the global RNG), so two runs from the same weights give
    the same curve.
    ``pad_id`` only fills masked positions, so any id in the vocabulary works.
    """
    if not examples:
        raise ValueError("no examples to imitate")
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # cosine decay to 10%: the high rate gets a random model moving; the last steps should refine, not jump
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * s / cfg.steps)))
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = shuffled_batches(len(examples), cfg.batch_size, gen)
    losses = []
    model.train()
    try:
        for step in range(cfg.steps):
            batch = next(batches)
            opt.zero_grad(set_to_none=True)
            scored = batch_step(model, [examples[i] for i in batch], cfg.max_len, pad_id, device, prompt_loss=cfg.prompt_loss)
            # a few long negotiation targets can spike the gradient of a tiny model
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(scored.detach()))  # the target's loss, comparable with or without the prompt's
            if progress is not None:
                progress(step, losses[-1])
    finally:
        model.eval()
    return losses


# ----- entry points: load, train, save ----------------------------------------------------------


def _demonstrated(cfg: ImitationConfig, tokenizer: Any, agent: Any) -> tuple[list[Episode], list[tuple[list[int], list[int]]]]:
    """The bots' demonstration episodes of ``cfg`` and their examples, rendered by ``agent``."""
    if cfg.seatings is None:
        raise ValueError("imitation needs its seatings resolved (cached_warm_start takes them from the run's games)")
    episodes = demonstrations(cfg.seatings, cfg.episodes_per_seating, cfg.seed)
    return episodes, imitation_examples(episodes, tokenizer, render=agent.prompt_ids)


def imitation_replay(model_dir: str | Path, cfg: ImitationConfig) -> list[tuple[list[int], list[int]]]:
    """The examples the imitation warm start in ``model_dir`` learned from (``trainer.replay_coef``): the
    same demonstrations, played again from the seatings its build recorded."""
    from transformers import AutoTokenizer

    from arena.agents.llm import LLMAgent
    from arena.engines.hf import HFEngine

    built = ImitationConfig.model_validate(json.loads((Path(model_dir) / META_FILE).read_text())["config"])
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return _demonstrated(built, tokenizer, LLMAgent(HFEngine(str(model_dir))))[1]


def warm_start(
    model_path: str | Path,
    out_dir: str | Path,
    cfg: ImitationConfig,
    *,
    progress: Callable[[int, float], None] | None = None,
) -> Path:
    """Load ``model_path``, imitate the bots of ``cfg.seatings``, save model and tokenizer to ``out_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arena.agents.llm import LLMAgent
    from arena.engines.hf import HFEngine

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(str(model_path))
    agent = LLMAgent(HFEngine.from_model(model, tokenizer))
    episodes, examples = _demonstrated(cfg, tokenizer, agent)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_token_id(tokenizer)
    losses = train_imitation(model, examples, cfg, pad_id=int(pad), progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    tail = losses[-max(1, len(losses) // 10) :]
    meta = {
        "config": cfg.model_dump(mode="json"),
        "base_model": str(model_path),
        "examples": len(examples),
        "episodes": len(episodes),
        "final_loss": losses[-1],
        #: the last tenth of the curve: one batch's loss is noisy
        "final_loss_mean": sum(tail) / len(tail),
        "first_loss": losses[0],
        "seconds": time.perf_counter() - start,
    }
    # written last: its presence marks a complete directory
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def cached_warm_start(model_path: str | Path, cfg: ImitationConfig, cache_dir: str | Path, games: Sequence[str] = ()) -> Path:
    """The warm-started model for (``model_path``'s name, ``cfg``), built on first use and reused after.

    Keyed by the model directory's name (the tiny model's name holds its own
    config hash) and ``cfg``. Built in a temporary sibling directory renamed
    into place, so a killed build never leaves a half-written model.
    """
    if cfg.seatings is None:
        if not games:
            raise ValueError("imitation needs seatings, or the run's games to take their declared demonstrations from")
        cfg = cfg.model_copy(update={"seatings": default_seatings(games)})
    name = Path(str(model_path).rstrip("/")).name
    key = hashlib.sha256(f"{name}:{cfg.model_dump_json()}".encode()).hexdigest()[:12]
    final = Path(cache_dir) / "models" / f"warm-{key}"
    from arena.progress import stage_progress

    return build_once(final, lambda tmp: warm_start(model_path, tmp, cfg, progress=stage_progress("imitation", cfg.steps)), marker=META_FILE)
