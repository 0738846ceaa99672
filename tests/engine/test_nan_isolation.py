"""NaN isolation on every decode path, and the zeroing of the blocks a non-finite sequence frees.

A decoding row must read nothing but its own context: not the padding of a ragged batch, not the
unwritten tail of its last block, not a block of another sequence, not a freed block. A read of a
NaN there is not harmless even when masked: SDPA turns a masked score into -inf, but its value
still enters the product ``0 * NaN = NaN``. Each decode path enforces the rule in its own code:

    path           when                              guarded by
    paged kernel   CPU, float32 / bfloat16 cache,    the kernel walks the block table up to
                   extension built                   context_lens (csrc/paged_attention_cpu.cpp)
    gather + SDPA  EAGER_CORE_DISABLE_EXT=1, or a    context_slots(): masked positions read the
                   float16 cache (use_paged_kernel)  row's own first slot (model/attention.py)
    static step    decode-only steps of DecodeGraphs the same context_slots() inside the step, and
                   (capture=False here; the CUDA     padding rows on the scratch block
                   graphs in test_cuda_decode.py)    (engine/decode_graphs.py)

``poison_unreadable_slots`` (nan_helpers.py) writes NaN into every slot of the pool that no
sequence has computed, before every step, so any read outside a row's own context shows up in the
logits. The logits must then be *bit-identical* to a clean run of the same path.

The second line of defence is ``LLMEngine``: a sequence whose logits go non-finite has written
non-finite K/V, so the blocks it gives back to the pool are zeroed (scheduler ``_release`` returns
them, ``runner.zero_blocks`` wipes them) and a later owner never inherits a NaN.
"""

from __future__ import annotations

import pytest
import torch

from eager_core import LLM, SamplingParams
from eager_core.engine.decode_graphs import DecodeGraphs
from eager_core.engine.intake import ScoreParams
from eager_core.ops.paged_attention import use_paged_kernel
from kv_helpers import assert_pool_empty, prompts_of, token_lists
from nan_helpers import poison_unreadable_slots, record_logits
from kv_helpers import one_thread  # noqa: F401  (an autouse fixture: importing it applies it here)

BS = 4
POISON = 200   # a token id whose embedding row becomes NaN
PATHS = ["paged", "gather", "gather-fp16", "static"]


def make_path_llm(ckpt, path: str, monkeypatch, num_blocks: int = 200, **kwargs) -> LLM:
    """A tiny engine whose decode steps take ``path`` (checked by ``assert_path``)."""
    if path == "paged" and not use_paged_kernel(torch.device("cpu"), torch.float32):
        pytest.skip("the paged decode kernel is not built (eager_core._C) or EAGER_CORE_DISABLE_EXT=1")
    if path == "gather":
        monkeypatch.setenv("EAGER_CORE_DISABLE_EXT", "1")   # read at every call: gather + SDPA
    kwargs.setdefault("enable_prefix_caching", False)        # cached blocks would be legitimate reads
    llm = LLM(str(ckpt), num_kv_blocks=num_blocks, block_size=BS,
              dtype="float16" if path == "gather-fp16" else "float32", **kwargs)
    if path == "static":
        llm.llm_engine.runner.graphs = DecodeGraphs(llm.model, llm.kv_pool, capture=False, context_step=8)
    return llm


def assert_path(llm: LLM, path: str) -> None:
    """The decode steps really took ``path``."""
    kernel = use_paged_kernel(llm.llm_engine.device, llm.kv_pool.kv.dtype)
    graphs = llm.llm_engine.runner.graphs
    if path == "static":   # (its mixed steps take whichever packed path this build has)
        assert graphs.steps, "no decode step ran static"
    else:
        assert graphs is None and kernel == (path == "paged"), (path, kernel)


# Ragged prompts (padding in every decode step), n=2 forks (shared blocks, copy-on-write), and a
# prompt longer than the token budget of a step (chunked prefill next to decoding rows).
PROMPTS = prompts_of([3, 9, 21, 5, 12])
SAMPLED = SamplingParams(temperature=0.8, n=2, seed=5, max_tokens=10, ignore_eos=True)


@pytest.mark.parametrize("path", PATHS)
def test_a_decode_reads_only_its_own_context(tiny_ckpt, monkeypatch, path):
    clean = make_path_llm(tiny_ckpt, path, monkeypatch, max_num_batched_tokens=16)
    clean_logits = record_logits(clean)
    ref = clean.generate(prompt_token_ids=PROMPTS, params=SAMPLED)
    llm = make_path_llm(tiny_ckpt, path, monkeypatch, max_num_batched_tokens=16)
    logits = poison_unreadable_slots(llm)
    out = llm.generate(prompt_token_ids=PROMPTS, params=SAMPLED)
    assert_path(llm, path)
    assert [c.finish_reason for r in out for c in r.outputs] == ["length"] * 10
    assert token_lists(out) == token_lists(ref)
    assert len(logits) == len(clean_logits)
    for step, (a, b) in enumerate(zip(logits, clean_logits)):
        assert torch.isfinite(a).all(), f"step {step}: a NaN reached the logits"
        assert torch.equal(a, b), f"step {step}: unreadable slots changed the logits"
    assert_pool_empty(llm)


def _poison_embedding(llm: LLM) -> None:
    # The tiny model ties embeddings to the LM head: clone first, or every row's logit for POISON is NaN.
    with torch.inference_mode():
        llm.model.embed = llm.model.embed.clone()
        llm.model.embed[POISON] = float("nan")


@pytest.mark.parametrize("path", PATHS)
def test_nan_written_in_the_same_step_does_not_reach_decoding_rows(tiny_ckpt, monkeypatch, path):
    """A poisoned prompt is prefilled in chunks, writing NaN K/V into block 0, while two sequences
    decode next to it; once their tables differ in length, the shorter one's is zero-padded, so
    its padding names block 0 (the static path sees only the decode-only steps after it)."""
    good = [[11, 12, 13], [21, 22]]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    expected = token_lists(make_path_llm(tiny_ckpt, path, monkeypatch, 16).generate(prompt_token_ids=good,
                                                                                      params=params))
    llm = make_path_llm(tiny_ckpt, path, monkeypatch, 16, max_num_batched_tokens=16)
    llm.logits(list(range(3, 3 + 14 * BS)))   # takes and frees blocks 0..13: the free list is now 14, 15, 0, ...
    _poison_embedding(llm)
    outs = llm.generate(prompt_token_ids=good + [[POISON] + list(range(3, 40))], params=params)
    assert outs[2].outputs[0].finish_reason == "error"
    assert token_lists(outs[:2]) == expected
    assert_pool_empty(llm)


# --- zeroing the blocks of a non-finite sequence ----------------------------------------------------

def watch_finishes(llm: LLM) -> list[tuple[list[int], list[int], bool]]:
    """Record, for every finished sequence: its blocks, their reference counts, and dirty_kv."""
    sched, bm, seen = llm.scheduler, llm.block_manager, []
    finish = sched.finish

    def watched(seq, reason):
        seen.append((list(seq.block_table), [bm.ref_count[b] for b in seq.block_table], seq.dirty_kv))
        return finish(seq, reason)
    sched.finish = watched
    return seen


def block_data(llm: LLM, block: int) -> torch.Tensor:
    return llm.kv_pool.kv[:, :, block * BS:(block + 1) * BS]


def test_a_nan_sequence_frees_zeroed_blocks_and_a_clean_one_does_not(tiny_ckpt):
    llm = LLM(str(tiny_ckpt), num_kv_blocks=64, block_size=BS, enable_prefix_caching=False)
    _poison_embedding(llm)
    finishes = watch_finishes(llm)
    outs = llm.generate(prompt_token_ids=[[5, 6, 7, 8, 9, 10], [POISON, 3, 4, 5, 6, 7]],
                        params=SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    assert [o.outputs[0].finish_reason for o in outs] == ["length", "error"]
    (clean_blocks, _, clean_dirty), (bad_blocks, bad_counts, bad_dirty) = sorted(finishes, key=lambda f: f[2])
    assert (clean_dirty, bad_dirty) == (False, True) and bad_counts == [1, 1]
    for b in bad_blocks:   # every layer's K and V of the poisoned sequence held NaN; now all zero
        assert torch.equal(block_data(llm, b), torch.zeros_like(block_data(llm, b))), b
    for b in clean_blocks:   # a clean sequence's blocks keep their (finite) data: nothing is wiped needlessly
        assert torch.isfinite(block_data(llm, b)).all() and block_data(llm, b).abs().sum() > 0, b
    assert_pool_empty(llm)


def test_a_nan_branch_zeroes_only_the_blocks_it_owned(tiny_ckpt):
    """Branch 1 of a sampled pair goes non-finite after 5 tokens: its private blocks are wiped, the
    prompt blocks it shares with branch 0 are not (branch 0 still reads them and goes on)."""
    params = SamplingParams(temperature=0.8, n=2, seed=7, max_tokens=12, ignore_eos=True)
    prompt = [[21, 22, 23, 24, 25, 26, 27, 28, 29]]   # 9 tokens: blocks 0, 1 full, block 2 shared then copied
    ref = LLM(str(tiny_ckpt), num_kv_blocks=64, block_size=BS).generate(prompt_token_ids=prompt, params=params)
    llm = LLM(str(tiny_ckpt), num_kv_blocks=64, block_size=BS, enable_prefix_caching=False)
    finishes = watch_finishes(llm)
    run = llm.llm_engine.runner.run

    def corrupted(batch):   # the logits of branch 1 after 5 generated tokens get a NaN
        out = run(batch)
        out.logits = out.logits.clone()
        for i, seq in enumerate(out.seqs):
            if (seq.branch_id, seq.num_generated) == (1, 5):
                out.logits[i, 17] = float("nan")
        return out
    llm.llm_engine.runner.run = corrupted
    out = llm.generate(prompt_token_ids=prompt, params=params)[0]
    assert [c.finish_reason for c in out.outputs] == ["length", "error"]
    assert out.outputs[0].token_ids == ref[0].outputs[0].token_ids                  # the sibling went on
    assert out.outputs[1].token_ids == ref[0].outputs[1].token_ids[:5]
    blocks, counts, dirty = next(f for f in finishes if f[2])
    shared = [b for b, c in zip(blocks, counts) if c > 1]
    private = [b for b, c in zip(blocks, counts) if c == 1]
    assert len(shared) == 2 and len(private) == 2   # prompt blocks 0-1 shared; its copy of block 2, and block 3
    for b in private:
        assert block_data(llm, b).abs().sum() == 0, b
    for b in shared:
        assert block_data(llm, b).abs().sum() > 0, b
    assert_pool_empty(llm)


def _score_request(llm: LLM, rid: str, ids: list[int]) -> None:
    llm.llm_engine.add_request(rid, ids, ScoreParams())


def test_a_nan_scoring_request_frees_zeroed_blocks_when_it_ends_or_is_aborted(tiny_ckpt):
    llm = LLM(str(tiny_ckpt), num_kv_blocks=64, block_size=BS, max_num_batched_tokens=8,
              enable_prefix_caching=False)
    _poison_embedding(llm)
    engine = llm.llm_engine
    finishes = watch_finishes(llm)
    with torch.inference_mode():
        logits = llm.logits([POISON] + list(range(3, 20)))   # 18 tokens: 3 chunks, NaN from the first
    assert torch.isnan(logits).all()
    (blocks, counts, dirty), = finishes
    assert dirty and len(blocks) == 5 and counts == [1] * 5
    for b in blocks:
        assert block_data(llm, b).abs().sum() == 0, b
    # Aborted after its first chunk: the blocks it holds then are zeroed by abort_request.
    sched = llm.scheduler
    _score_request(llm, "s", [POISON] + list(range(3, 20)))
    with torch.inference_mode():
        engine.step()
    (req,) = sched.running
    held = list(req.seqs[0].block_table)
    assert req.seqs[0].dirty_kv and len(held) == 2
    assert torch.isnan(block_data(llm, held[0])).any()
    engine.abort_request("s")
    for b in held:
        assert block_data(llm, b).abs().sum() == 0, b
    assert_pool_empty(llm)
