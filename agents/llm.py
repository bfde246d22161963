"""The LLM agent: renders a player's view with the tokenizer's chat template,
asks an engine for a completion, and hands the text to the game.

Games never see tokenizers or chat templates; this is the only place where
prompts are rendered. The prompt and completion token ids and the sampler's
logprobs travel with the action so a learner trains on exactly what was
sampled.
"""

from __future__ import annotations

from typing import Any

from arena.agents.base import Action, PlayerView
from arena.engines.base import Engine, SamplingParams


class LLMAgent:
    """A policy backed by a language model on an :class:`~arena.engines.base.Engine`.

    ``history_turns`` earlier (observation, reply) pairs of the same player are
    rendered as chat turns before the current observation; older ones are
    dropped, and more are dropped if the prompt would exceed ``max_prompt_tokens``.
    The default is none: Arena's games put everything a player needs (the
    dialogue, the history of rounds) into each observation, and repeating it
    would triple prompt length for nothing.
    """

    DEFAULT_SYSTEM_PROMPT = "You are {player} in the game {game}. Reply with your move."

    def __init__(
        self,
        engine: Engine,
        policy_id: str = "main",
        *,
        sampling: SamplingParams | None = None,
        history_turns: int = 0,
        max_prompt_tokens: int = 1024,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ):
        self.engine = engine
        self.policy_id = policy_id
        self.sampling = sampling or SamplingParams()
        self.history_turns = history_turns
        self.max_prompt_tokens = max_prompt_tokens
        self.system_prompt = system_prompt

    @property
    def version(self) -> int:
        return self.engine.version

    def messages(self, view: PlayerView, history_turns: int | None = None) -> list[dict[str, str]]:
        keep = self.history_turns if history_turns is None else history_turns
        msgs = [{"role": "system", "content": self.system_prompt.format(player=view.player, game=view.game)}]
        for obs, act in view.history[len(view.history) - keep :] if keep > 0 else []:
            msgs.append({"role": "user", "content": obs})
            msgs.append({"role": "assistant", "content": act})
        msgs.append({"role": "user", "content": view.observation})
        return msgs

    def prompt_ids(self, view: PlayerView) -> list[int]:
        keep = min(self.history_turns, len(view.history))
        while True:
            ids = _as_ids(self.engine.tokenizer.apply_chat_template(self.messages(view, keep), add_generation_prompt=True, tokenize=True))
            if len(ids) <= self.max_prompt_tokens or keep == 0:
                break
            keep -= 1
        # A single observation longer than the budget keeps its end, where the question is.
        return ids[-self.max_prompt_tokens :]

    async def act(self, view: PlayerView) -> Action:
        ids = self.prompt_ids(view)
        seed = int(view.rng.integers(2**31 - 1))
        out = await self.engine.generate(ids, self.sampling, seed)
        return Action(text=out.text.strip(), prompt_ids=ids, completion_ids=out.token_ids, logprobs=out.logprobs)

    def __repr__(self) -> str:
        return f"<LLMAgent {self.policy_id}@{self.version}>"


def _as_ids(rendered: Any) -> list[int]:
    # transformers returns a list, or a BatchEncoding / dict with input_ids, by version
    if isinstance(rendered, dict) or hasattr(rendered, "keys"):
        rendered = rendered["input_ids"]
    return [int(i) for i in rendered]
