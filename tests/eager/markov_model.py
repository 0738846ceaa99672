"""A one-layer Llama whose next-token distribution depends only on the current token.

Attention and MLP outputs are zeroed, so the last hidden state is the current token's embedding,
a one-hot vector; after the final RMSNorm the logits are ``8 * lm_head[:, dim(token)]``. Writing
columns of ``lm_head`` therefore writes a Markov chain with exactly known entropies.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from tiny_models import write_tokenizer

HIDDEN = 64
THINK_END = 259          # "</think>", a special token added to the tiny byte-level tokenizer
EOS = 258
DIM = {THINK_END: 50}    # tokens >= 64 need a dimension of their own


def topk_entropy(logits: list[float], k: int = 20) -> float:
    top = sorted(logits, reverse=True)[:k]
    z = sum(math.exp(x) for x in top)
    return -sum(math.exp(x) / z * (x - math.log(z)) for x in top)


def make_markov_checkpoint(folder: Path, transitions: dict[int, dict[int, float]]) -> Path:
    """transitions[a] = {b: logit}: after token a, token b has that logit (others 0 / -30)."""
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=260, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   rms_norm_eps=1e-6, tie_word_embeddings=False, eos_token_id=EOS, bos_token_id=256)
    model = transformers.LlamaForCausalLM(cfg).eval()
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    for k in sd:
        if "norm" in k:
            sd[k] = torch.ones_like(sd[k])
    for t in range(260):
        sd["model.embed_tokens.weight"][t, DIM.get(t, t % HIDDEN)] = 1.0
    lm_head = torch.full((260, HIDDEN), -30.0 / 8)     # unlisted tokens: logit -30 (probability ~0)
    for a, targets in transitions.items():
        for b, logit in targets.items():
            lm_head[b, DIM.get(a, a)] = logit / 8       # RMSNorm scales the one-hot by sqrt(64) = 8
    sd["lm_head.weight"] = lm_head
    model.load_state_dict(sd)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    write_tokenizer(folder, extra_specials=["</think>"])
    (folder / "generation_config.json").write_text(json.dumps(dict(eos_token_id=[EOS])))
    return folder
