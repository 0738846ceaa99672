"""One-call GPU check for a lent accelerator: correctness (CUDA vs CPU greedy tokens) and decode speed.

The device machine has no registry or hub access, so the model is random-initialised in the shape
of Qwen3-0.6B (28 layers, hidden 1024, 16 q heads / 8 kv heads of 128, vocab 151936) and written
as an ordinary HF checkpoint folder with a byte-level tokenizer.

    python tools/gpu_check.py --out /tmp/gpu_ckpt            # correctness + benchmark, ~3-5 minutes

Correctness uses float32 on both devices and a 4-layer cut of the same shape, where greedy tokens of
a random model are stable enough to compare exactly; speed uses bfloat16 and the full shape.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cli_common  # noqa: F401  (sets up the import path)

QWEN3_06B = dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], vocab_size=151936, hidden_size=1024,
                 intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                 head_dim=128, rms_norm_eps=1e-6, max_position_embeddings=4096, tie_word_embeddings=True,
                 rope_theta=1000000.0, eos_token_id=151645, bos_token_id=151643, hidden_act="silu")


def write_random_checkpoint(folder: Path, layers: int, seed: int = 0) -> Path:
    """A random Qwen3-shaped checkpoint (safetensors + config + byte-level tokenizer)."""
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    cfg = dict(QWEN3_06B, num_hidden_layers=layers)
    g = torch.Generator().manual_seed(seed)
    h, hd, inter = cfg["hidden_size"], cfg["head_dim"], cfg["intermediate_size"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd

    def rnd(*shape, std=0.02):
        return (torch.randn(*shape, generator=g) * std).contiguous()

    w = {"model.embed_tokens.weight": rnd(cfg["vocab_size"], h, std=1.0), "model.norm.weight": torch.ones(h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        w.update({p + "input_layernorm.weight": torch.ones(h), p + "post_attention_layernorm.weight": torch.ones(h),
                  p + "self_attn.q_proj.weight": rnd(q, h), p + "self_attn.k_proj.weight": rnd(kv, h),
                  p + "self_attn.v_proj.weight": rnd(kv, h), p + "self_attn.o_proj.weight": rnd(h, q),
                  p + "self_attn.q_norm.weight": torch.ones(hd), p + "self_attn.k_norm.weight": torch.ones(hd),
                  p + "mlp.gate_proj.weight": rnd(inter, h), p + "mlp.up_proj.weight": rnd(inter, h),
                  p + "mlp.down_proj.weight": rnd(h, inter)})
    folder.mkdir(parents=True, exist_ok=True)
    save_file(w, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg))
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({}))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": cfg["eos_token_id"]}))
    return folder


def correctness(out: Path) -> dict:
    from eager_core import LLM, SamplingParams

    ckpt = write_random_checkpoint(out / "qwen3_4l", layers=4)
    prompts = [[(7 * i + j) % 200 + 1 for j in range(n)] for i, n in enumerate((5, 17, 33, 64))]
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    cpu = LLM(str(ckpt), device="cpu", num_kv_blocks=256).generate(prompt_token_ids=prompts, params=params)
    gpu_llm = LLM(str(ckpt), device="cuda", num_kv_blocks=256)
    gpu = gpu_llm.generate(prompt_token_ids=prompts, params=params)
    same = [a.outputs[0].token_ids == b.outputs[0].token_ids for a, b in zip(cpu, gpu)]
    logit_diff = (gpu_llm.logits(prompts[1]).cpu() - LLM(str(ckpt), num_kv_blocks=64).logits(prompts[1])).abs().max()
    return {"greedy_equal": same, "max_logit_diff": float(logit_diff)}


def speed(out: Path, batch_sizes: list[int], steps: int) -> list[dict]:
    import torch

    from eager_core import LLM, SamplingParams

    ckpt = write_random_checkpoint(out / "qwen3_06b", layers=28)
    llm = LLM(str(ckpt), device="cuda", dtype="bfloat16")
    rows = []
    for b in batch_sizes:
        prompts = [[(i + j) % 200 + 1 for j in range(128)] for i in range(b)]
        params = SamplingParams(temperature=0, max_tokens=steps, ignore_eos=True)
        llm.generate(prompt_token_ids=prompts, params=SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
        torch.cuda.synchronize()
        t = time.perf_counter()
        llm.generate(prompt_token_ids=prompts, params=params)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
        step_s = dt / steps
        bytes_per_step = llm.model.weight_bytes() + b * (128 + steps / 2) * 2 * llm.kv_pool.kv[0, 0, 0].numel() \
            * llm.kv_pool.kv.element_size() * llm.config.num_layers
        rows.append({"batch": b, "tok_s": b * steps / dt, "ms_per_step": 1000 * step_s,
                     "GB_s": bytes_per_step / step_s / 1e9})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/eager_core_gpu_check")
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--batch-sizes", default="1,8,64")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA device (this check runs on a lent GPU)", file=sys.stderr)
        return 2
    from eager_core.ops import backend
    out = Path(args.out)
    report = {"device": torch.cuda.get_device_name(), "entropy_backend": backend(),
              "correctness": correctness(out),
              "speed": speed(out, [int(b) for b in args.batch_sizes.split(",")], args.steps)}
    print(json.dumps(report, indent=1))
    return 0 if all(report["correctness"]["greedy_equal"]) else 1


if __name__ == "__main__":
    sys.exit(cli_common.run_main(main))
