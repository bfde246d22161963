"""A tiny Llama-style model built locally: no hub access, no downloads.

The tokenizer is a byte-level BPE trained on the caller's corpus (usually a
game's own text), so a few thousand parameters of embedding go a long way and
any string round-trips exactly. The model is randomly initialised from
``TinyModelConfig.seed``; warm-starting it (e.g. imitation of scripted agents)
is the trainer's job. Everything is saved the way a real checkpoint is, so the
rest of Arena loads it with ``AutoTokenizer`` / ``AutoModelForCausalLM``
``.from_pretrained(path)`` and never needs to know it is tiny.

    cfg = TinyModelConfig()
    path = cached_tiny_model(cfg, lambda: my_game_corpus())
    engine = HFEngine(path)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pydantic

if TYPE_CHECKING:  # torch and transformers load when a model is built: a config check needs neither
    from transformers import PreTrainedTokenizerFast

PAD, BOS, END = "<|pad|>", "<|bos|>", "<|end|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = [PAD, BOS, END, *ROLE_TOKENS.values()]

#: ``<|role|>content<|end|>`` per message; the generation prompt opens the assistant's turn.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{%- endif -%}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{%- endif -%}"
)

#: the 256 byte symbols plus the special tokens: a smaller vocabulary cannot spell every string
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)

META_FILE = "arena_tiny.json"


class TinyModelConfig(pydantic.BaseModel):
    """Shape of the tiny model. The defaults give ~0.2M parameters: fast on two CPU cores."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    #: target BPE vocabulary, special tokens included; a small corpus may yield fewer
    #: merges, and the model's embedding always matches the trained tokenizer
    vocab_size: int = pydantic.Field(1024, ge=MIN_VOCAB_SIZE)
    hidden_size: int = pydantic.Field(64, gt=0)
    num_layers: int = pydantic.Field(2, gt=0)
    #: head_dim = hidden_size / num_heads must be >= 32: vLLM's CPU attention needs it
    num_heads: int = pydantic.Field(2, gt=0)
    #: MLP width; 4x hidden as in most Llama-style models
    intermediate_size: int = pydantic.Field(256, gt=0)
    #: longest prompt + completion the rotary embedding is configured for
    max_position_embeddings: int = pydantic.Field(2048, gt=0)
    #: fixes the initial weights (the tokenizer depends only on the corpus)
    seed: int = 0
    #: every digit its own token. BPE merges digits by frequency, so one year is a single token and the
    #: next three pieces (" 1796" but " 18", "1", "1"). An option for experiments: it did not help the
    #: collaborative-QA model read years off a page (every year wrong after 3,000 steps, against 0-35%
    #: right with merged digits: benchmarks/results/reading-curve-redrawn-*.json)
    split_digits: bool = False
    #: every integer from the first to the second (inclusive), after a space, is one token (added to the
    #: trained BPE: " 1811" whole, where BPE alone gives " 18", "1", "1" for a year its corpus lacks), so a
    #: model might copy a year off a page as it copies a word. An option for experiments, like split_digits:
    #: the collaborative-QA model read no year right with it after 1,500 steps, against 14 of 60 with BPE's
    #: pieces (benchmarks/results/reading-curve-redrawn-prompt-loss-number-tokens-cpu2.json). None: BPE alone
    number_tokens: tuple[int, int] | None = None
    #: digits in pairs from the left: " 1906" is " 19", "06" (and " 812" is " 81", "2"), so a year is two
    #: tokens whatever the corpus, each of a hundred-odd; the tokenizer's corpus gets every pair so BPE merges them
    digit_pairs: bool = False

    @pydantic.model_validator(mode="after")
    def _check_heads(self) -> TinyModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        if self.number_tokens is not None and not 0 <= self.number_tokens[0] <= self.number_tokens[1]:
            raise ValueError(f"number_tokens must be [low, high] with 0 <= low <= high, got {list(self.number_tokens)}")
        if sum([self.number_tokens is not None, self.split_digits, self.digit_pairs]) > 1:
            raise ValueError("number_tokens, split_digits and digit_pairs each decide how digits are cut: set one")
        head_dim = self.hidden_size // self.num_heads
        if head_dim < 32:
            raise ValueError(
                f"head_dim = hidden_size / num_heads = {self.hidden_size} / {self.num_heads} = {head_dim}, "
                "but it must be >= 32 (vLLM's CPU attention rejects smaller heads): "
                "raise hidden_size or lower num_heads"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def short_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


def train_tokenizer(
    corpus: Iterable[str], vocab_size: int, split_digits: bool = False, number_tokens: tuple[int, int] | None = None, digit_pairs: bool = False
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus`` with Arena's special and chat tokens.

    Byte-level means every string (spaces, newlines, unicode) encodes and
    decodes back exactly; the BPE merges only decide how short the encoding is.
    ``split_digits``: no merge joins a digit to anything, so every digit is a token of its own.
    ``number_tokens`` (low, high): each of " low" ... " high" is added as one token after training.
    ``digit_pairs``: digits are cut in pairs from the left, a leading space kept with the first.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be >= {MIN_VOCAB_SIZE} (256 bytes + special tokens), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: a prompt is a concatenation of pieces, and an inserted space would change it
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split_digits:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif digit_pairs:
        from tokenizers import Regex

        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r" ?[0-9][0-9]?"), behavior="isolated"), byte_level])
        # every pair, with and without the space, often enough that BPE merges each whatever the corpus
        corpus = [*corpus, *[" ".join(f"{a}{b:02d}" for a in range(10, 100) for b in range(100))] * 8]
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    if number_tokens is not None:
        from tokenizers import AddedToken

        # matched in the raw text before the byte-level split; normalized=False keeps the leading space
        tok.add_tokens([AddedToken(f" {n}", normalized=False) for n in range(number_tokens[0], number_tokens[1] + 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=END,
        pad_token=PAD,
        extra_special_tokens=list(ROLE_TOKENS.values()),
        chat_template=CHAT_TEMPLATE,
        # the prompt is rendered by the chat template; never insert bos on our own
        add_bos_token=False,
        clean_up_tokenization_spaces=False,
        padding_side="left",
        model_max_length=1 << 30,
    )


def corpus_hash(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def build_tiny_model(cfg: TinyModelConfig, corpus: Iterable[str], out_dir: str | Path) -> Path:
    """Train a tokenizer on ``corpus``, initialise a Llama from ``cfg.seed``, save both to ``out_dir``.

    Torch's global random state is left as it was: the seed is used inside a forked RNG.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    lines = list(corpus)
    if not lines:
        raise ValueError("corpus is empty: the tokenizer needs some text to train on")
    out = Path(out_dir)
    tokenizer = train_tokenizer(lines, cfg.vocab_size, cfg.split_digits, cfg.number_tokens, cfg.digit_pairs)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        # at this size the embedding is most of the model; tying halves it
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    meta = {
        "config": cfg.model_dump(),
        "corpus_sha256": corpus_hash(lines),
        "corpus_lines": len(lines),
        "tokenizer_vocab_size": len(tokenizer),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def default_cache_dir() -> Path:
    home = os.environ.get("ARENA_HOME")
    return Path(home) if home else Path.home() / ".cache" / "arena"


def cached_tiny_model(
    cfg: TinyModelConfig,
    corpus_fn: Callable[[], Iterable[str]],
    cache_dir: Path | None = None,
    corpus_key: str = "",
) -> Path:
    """The directory of the tiny model for ``cfg``, built on first use and reused after.

    The cache key is ``cfg`` plus ``corpus_key``, a name for what the corpus
    holds (the caller bumps it when the corpus changes); ``corpus_fn`` is only
    called to build. The build happens in a temporary sibling directory that is
    renamed into place, so a killed build never leaves a half-written model.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cfg.short_hash() if not corpus_key else hashlib.sha256(f"{cfg.short_hash()}:{corpus_key}".encode()).hexdigest()[:12]
    final = root / "models" / f"tiny-{key}"
    return build_once(final, lambda tmp: build_tiny_model(cfg, corpus_fn(), tmp))


def build_once(final: Path, build: Callable[[Path], object], marker: str = META_FILE) -> Path:
    """Build a cache directory once: ``build(tmp)`` fills a temporary sibling that is renamed
    to ``final``, so a killed build never leaves a half-written directory. A directory holding
    ``marker`` (written last by ``build``) is complete and reused. Processes sharing the cache
    (two runs, parallel test workers) take a lock per directory: one builds, the others wait and
    reuse its result."""
    if (final / marker).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    locks = Path(tempfile.gettempdir()) / "arena-build-locks"
    locks.mkdir(exist_ok=True)
    key = hashlib.sha256(str(final.resolve()).encode()).hexdigest()[:16]
    with open(locks / f"{final.name}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / marker).is_file():  # another process built it while this one waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        try:
            build(tmp)
            if final.exists():  # a stale directory without the marker (a build killed before the rename)
                shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final
