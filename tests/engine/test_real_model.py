"""The real default model end to end: parity with transformers on the same GGUF, greedy text, EAGer."""

from __future__ import annotations

import torch

from eager_core import EagerParams, SamplingParams


def test_logits_match_transformers_on_the_converted_gguf(smol_llm):
    """tests/io/test_smollm_parity.py proves the converted tensors equal transformers' own GGUF
    loader's bit for bit; here the engine's forward over them must match transformers' forward."""
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(str(smol_llm.ckpt_dir), dtype=torch.float32).eval()
    ids = smol_llm.tokenizer.encode("The capital of France is Paris, and 12 + 30 = 42. Café 🙂")
    ours = smol_llm.logits(ids)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].float()
    assert (ours - ref).abs().max().item() < 1e-3
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


def test_greedy_continuation_names_paris(smol_llm):
    out = smol_llm.generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=8))
    assert " Paris" in out[0].outputs[0].text


def test_eager_init_spends_fewer_tokens_than_parallel_and_is_reproducible(smol_llm):
    prompts = [[{"role": "user", "content": f"What is {a} + {b}? Give the answer in \\boxed{{}}."}]
               for a, b in [(3, 4), (12, 30), (25, 17)]]
    params = EagerParams(theta=2.2, max_sequences=4, max_tokens=40, seed=5)
    par = smol_llm.eager(prompts, params, method="parallel")
    par_tokens = smol_llm.last_stats["generated_tokens"]
    init = smol_llm.eager(prompts, params, method="eager-init")
    init_tokens = smol_llm.last_stats["generated_tokens"]
    assert all(o.num_sequences == 4 for o in par)
    assert all(1 <= o.num_sequences <= 4 for o in init)
    assert init_tokens < par_tokens
    assert init_tokens == sum(o.generated_tokens for o in init)
    again = smol_llm.eager(prompts, params, method="eager-init")
    assert [[s.token_ids for s in o.sequences] for o in again] == [[s.token_ids for s in o.sequences] for o in init]
    assert any(o.branch_events for o in init)   # real entropies do cross 2.2 on this model
