"""The tiny local model: tokenizer training, deterministic build, on-disk cache."""

from __future__ import annotations

import json
import random

import pydantic
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arena.tiny import (
    META_FILE,
    SPECIAL_TOKENS,
    TinyModelConfig,
    build_tiny_model,
    cached_tiny_model,
    corpus_hash,
    train_tokenizer,
)

SMALL = TinyModelConfig(vocab_size=512)


def game_corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        r = rng.randint(1, 10)
        lines.append(
            rng.choice(
                [
                    f"Round {r} of 10. Answer with J or F.",
                    f"OFFER ${rng.randint(1, 99)}",
                    f"The buyer says: I can pay ${rng.randint(1, 99)}, not more.\nACCEPT or REJECT?",
                    f"Player {rng.randint(0, 3)} chose {rng.choice('JF')}; score {r}-{rng.randint(0, 9)}.",
                ]
            )
        )
    return lines


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(game_corpus(), 512)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_tiny_model(SMALL, game_corpus(), tmp_path_factory.mktemp("tiny") / "model")


# ----- tokenizer --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "Round 3 of 10. Answer with J or F.",
        "OFFER $12",
        "  two leading spaces, trailing two  ",
        "line one\nline two\n\n\tindented\r\n",
        "punctuation: !?.,;:'\"()[]{}<>/\\|@#%^&*-_=+~`",
        "unicode: café, naïve, 漢字, Ελληνικά, emoji 🙂🎲",
        "<|end|> is text here, not a special token? <|user",
        "",
    ],
)
def test_tokenizer_round_trip(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_split_digits_makes_every_digit_a_token_and_still_round_trips():
    merged, split = train_tokenizer(game_corpus(), 512), train_tokenizer(game_corpus(), 512, split_digits=True)
    text = "OFFER $1796 in 2008, born 1811.\n  42 x 7 = 294 🙂"
    assert split.decode(split.encode(text, add_special_tokens=False)) == text
    pieces = lambda tok: [tok.decode([i]) for i in tok.encode(" 1811 and $99", add_special_tokens=False)]
    assert any(len(p.strip()) > 1 and p.strip().isdigit() for p in pieces(merged))  # BPE joins frequent digits
    digits = [p for p in pieces(split) if any(c.isdigit() for c in p)]
    assert digits == ["1", "8", "1", "1", "9", "9"]
    assert TinyModelConfig(split_digits=True).short_hash() != TinyModelConfig().short_hash()


def test_number_tokens_make_each_year_one_token_and_round_trip():
    from_bpe = train_tokenizer(["born in the year 1811.", "x"] * 3, 300)
    whole = train_tokenizer(["born in the year 1811.", "x"] * 3, 300, number_tokens=(800, 2020))
    pieces = lambda tok, text: [tok.decode([i]) for i in tok.encode(text, add_special_tokens=False)]
    assert len(pieces(from_bpe, " 1796")) > 1
    assert pieces(whole, "born in 1796.")[-2:] == [" 1796", "."]
    assert pieces(whole, "ANSWER: 800")[-1] == " 800"
    for text in ("born in 1796.", "ANSWER: 2021 (1811)", " 18110", "x 2020x"):
        assert whole.decode(whole.encode(text, add_special_tokens=False)) == text
    with pytest.raises(ValueError, match="number_tokens"):
        TinyModelConfig(number_tokens=(2020, 800))


def test_digit_pairs_cut_every_number_in_pairs_from_the_left_and_round_trip():
    tok = train_tokenizer(game_corpus(), 512, digit_pairs=True)
    pieces = lambda text: [tok.decode([i]) for i in tok.encode(text, add_special_tokens=False)]
    assert pieces(" 1906")[-2:] == [" 19", "06"]  # a year two tokens, the space with the first pair
    assert pieces(" 2999")[-2:] == [" 29", "99"] and pieces(" 812")[-2:] == [" 81", "2"]
    for text in ("OFFER $1796 in 2008, born 1811.\n  42 x 7 = 294", "compounds-0019 0.65"):
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    with pytest.raises(ValueError, match="set one"):
        TinyModelConfig(digit_pairs=True, split_digits=True)


def test_special_tokens_are_distinct_single_ids(tokenizer):
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert len(set(ids)) == len(SPECIAL_TOKENS)
    assert all(isinstance(i, int) and i != tokenizer.unk_token_id for i in ids)
    for tok, i in zip(SPECIAL_TOKENS, ids):
        assert tokenizer.encode(tok, add_special_tokens=False) == [i]
    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.bos_token == "<|bos|>"
    assert tokenizer.eos_token == "<|end|>"
    assert {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id} <= set(ids)
    # BPE merges were learned from the corpus: a frequent phrase is shorter than its bytes
    assert len(tokenizer.encode("Round 3 of 10.", add_special_tokens=False)) < len("Round 3 of 10.")


def test_chat_template_two_turns(tokenizer):
    messages = [
        {"role": "system", "content": "You play J or F."},
        {"role": "user", "content": "Round 1 of 10."},
        {"role": "assistant", "content": "J"},
        {"role": "user", "content": "Round 2 of 10."},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == ("<|system|>You play J or F.<|end|><|user|>Round 1 of 10.<|end|><|assistant|>J<|end|><|user|>Round 2 of 10.<|end|><|assistant|>")
    without = tokenizer.apply_chat_template(messages[:3], tokenize=False)
    assert without == "<|system|>You play J or F.<|end|><|user|>Round 1 of 10.<|end|><|assistant|>J<|end|>"
    # no bos is inserted when the rendered prompt is encoded
    ids = tokenizer.encode(rendered, add_special_tokens=True)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|system|>")
    assert tokenizer.decode(ids, skip_special_tokens=True) == "You play J or F.Round 1 of 10.JRound 2 of 10."


def test_chat_template_rejects_unknown_role(tokenizer):
    with pytest.raises(Exception, match="unknown role"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_tokenizer_vocab_too_small_is_rejected():
    with pytest.raises(ValueError, match="vocab_size must be >="):
        train_tokenizer(["abc"], 100)


# ----- config -----------------------------------------------------------------------------------
def test_config_rejects_small_head_dim():
    with pytest.raises(pydantic.ValidationError, match=r"head_dim .* = 16, but it must be >= 32"):
        TinyModelConfig(hidden_size=64, num_heads=4)
    with pytest.raises(pydantic.ValidationError, match="divisible"):
        TinyModelConfig(hidden_size=96, num_heads=5)
    assert TinyModelConfig(hidden_size=128, num_heads=4).head_dim == 32


def test_config_is_strict_and_frozen():
    with pytest.raises(pydantic.ValidationError, match="num_layer"):
        TinyModelConfig(num_layer=3)
    cfg = TinyModelConfig()
    with pytest.raises(pydantic.ValidationError):
        cfg.seed = 1
    assert cfg.short_hash() == TinyModelConfig().short_hash() != TinyModelConfig(seed=1).short_hash()


# ----- builder ----------------------------------------------------------------------------------
def test_built_dir_loads_like_a_real_checkpoint(built):
    assert (built / "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(built)
    model = AutoModelForCausalLM.from_pretrained(built)
    assert model.config.model_type == "llama"
    assert model.config.head_dim == 32
    assert model.config.vocab_size == len(tok) <= SMALL.vocab_size
    assert (model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id) == (
        tok.pad_token_id,
        tok.bos_token_id,
        tok.eos_token_id,
    )
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.dtype == torch.float32
    text = "OFFER $12\nRound 3 of 10."
    assert tok.decode(tok.encode(text)) == text
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True) == ("<|user|>hi<|end|><|assistant|>")
    with torch.no_grad():
        out = model(torch.tensor([tok.encode(text)])).logits
    assert out.shape == (1, len(tok.encode(text)), len(tok))
    meta = json.loads((built / META_FILE).read_text())
    assert meta["config"] == SMALL.model_dump()
    assert meta["corpus_sha256"] == corpus_hash(game_corpus())


def _weights(path):
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_build_is_deterministic_in_seed_and_leaves_global_rng_alone(tmp_path, built):
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    same = build_tiny_model(SMALL, game_corpus(), tmp_path / "same")
    other = build_tiny_model(SMALL.model_copy(update={"seed": 1}), game_corpus(), tmp_path / "other")
    assert torch.equal(torch.get_rng_state(), before)

    a, b, c = _weights(built), _weights(same), _weights(other)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
    # the tokenizer depends on the corpus only
    assert (built / "tokenizer.json").read_text() == (other / "tokenizer.json").read_text()


def test_build_accepts_a_generator_corpus(tmp_path):
    path = build_tiny_model(SMALL, (line for line in game_corpus(50)), tmp_path / "gen")
    assert json.loads((path / META_FILE).read_text())["corpus_lines"] == 50


# ----- cache ------------------------------------------------------------------------------------
def test_cached_tiny_model_builds_once(tmp_path):
    calls = []

    def corpus_fn():
        calls.append(1)
        return game_corpus(100)

    first = cached_tiny_model(SMALL, corpus_fn, cache_dir=tmp_path)
    second = cached_tiny_model(SMALL, corpus_fn, cache_dir=tmp_path)
    assert first == second == tmp_path / "models" / f"tiny-{SMALL.short_hash()}"
    assert len(calls) == 1
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]  # no temp dirs left
    AutoModelForCausalLM.from_pretrained(first)

    third = cached_tiny_model(SMALL.model_copy(update={"seed": 7}), corpus_fn, cache_dir=tmp_path)
    assert third != first and len(calls) == 2


def test_cached_tiny_model_failed_build_leaves_nothing(tmp_path):
    def broken():
        yield "Round 1 of 10."
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError, match="killed mid-build"):
        cached_tiny_model(SMALL, broken, cache_dir=tmp_path)
    assert list((tmp_path / "models").iterdir()) == []
    path = cached_tiny_model(SMALL, lambda: game_corpus(100), cache_dir=tmp_path)
    assert (path / META_FILE).is_file()


def test_cached_tiny_model_default_dir_is_arena_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ARENA_HOME", str(tmp_path / "home"))
    path = cached_tiny_model(SMALL, lambda: game_corpus(100))
    assert path.parent == tmp_path / "home" / "models"
