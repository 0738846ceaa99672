"""Functions run on each rank by the distributed tests (module-level, so spawned processes can import them)."""

from __future__ import annotations

import time

import torch


def tp_generate(rank: int, ckpt: str, prompts: list[str], max_tokens: int, probe: list[int],
                dtype: str = "float32") -> dict:
    """Greedy outputs and the logits of ``probe`` on a tensor-parallel LLM (every rank makes the same calls)."""
    from eager_core import LLM, SamplingParams

    llm = LLM(ckpt, dtype=dtype, num_kv_blocks=64, tensor_parallel_size=2)
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens))
    return dict(tokens=[o.outputs[0].token_ids for o in outs], logits=llm.logits(probe),
                kv_heads=llm.kv_pool.kv.shape[3], local_heads=llm.model.cfg.num_heads)


def tp_compare(rank: int, ckpts: list[str], prompts: list[str], max_tokens: int, probe: list[int]) -> list[dict]:
    """tp_generate for several checkpoints in one process (a process start costs more than a tiny model)."""
    return [tp_generate(rank, c, prompts, max_tokens, probe) for c in ckpts]


def tp_diverge(rank: int, ckpt: str) -> None:
    """Ranks that (wrongly) feed different prompts: the consistency check must catch it."""
    import os

    os.environ["EAGER_CORE_TP_CHECK_EVERY"] = "1"
    from eager_core import LLM, SamplingParams

    llm = LLM(ckpt, num_kv_blocks=64, tensor_parallel_size=2)
    llm.generate(["abc" if rank == 0 else "abd"], SamplingParams(temperature=0.0, max_tokens=4))


def tp_rank1_raises_then_hangs(rank: int, ckpt: str, release: str, max_hang_s: float) -> list[int]:
    """Rank 1 raises mid-generation and then stays alive without calling any collective, until rank 0
    has given up (it creates the file ``release``) or ``max_hang_s`` passes. Rank 1's error says which:
    only rank 0's collective timeout can free rank 0 while rank 1 is still alive."""
    from pathlib import Path

    from eager_core import LLM, SamplingParams

    llm = LLM(ckpt, num_kv_blocks=64, tensor_parallel_size=2)

    def on_token(seq, token):
        if rank == 1 and seq.num_generated == 3:
            raise ValueError("injected failure on rank 1")

    try:
        out = llm.generate(["hello"], SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True),
                           on_token=on_token)
    except ValueError as e:
        end = time.monotonic() + max_hang_s   # a stuck rank: only the collective timeout can free its peers
        while not Path(release).exists() and time.monotonic() < end:
            time.sleep(0.05)
        raise ValueError(f"{e}; {'released by rank 0' if Path(release).exists() else 'never released'}") from e
    except BaseException:
        if rank == 0:
            Path(release).touch()   # rank 0 gave up while rank 1 hangs
        raise
    return out[0].outputs[0].token_ids


def contains(text: str, answer: str) -> bool:
    """A checker: the answer appears in the text."""
    return answer in text


def dp_eager(rank: int, ckpt: str, prompts: list, params: dict, runs: list[tuple[str, list | None]],
             fail_on_rank: int | None = None) -> list[dict] | None:
    """Data-parallel EAGer runs (method, answers); rank 0 returns every output (as dicts) and the stats."""
    from eager_core import LLM, EagerParams
    from eager_core.eager.data_parallel import eager_data_parallel, is_main_process

    def checker(text: str, answer: str) -> bool:
        if rank == fail_on_rank:
            raise ValueError(f"injected checker failure on rank {rank}")
        return contains(text, answer)

    llm = LLM(ckpt, num_kv_blocks=256)
    results = []
    for method, answers in runs:
        outs = eager_data_parallel(llm, prompts, EagerParams(**params), method, answers,
                                   checker if answers is not None else None)
        if is_main_process():
            results.append(dict(outputs=[o.to_dict() for o in outs], stats=llm.last_stats))
        else:
            assert outs is None
    return results if is_main_process() else None


def leader_main(rank: int, ckpt: str, prompts: list, params: dict, fail_after: int | None = None) -> dict | None:
    """Single-process style code run through run_data_parallel: two eager calls, then maybe a failure."""
    from eager_core import LLM, EagerParams
    from eager_core.eager.leader import run_data_parallel

    def main(llm) -> dict:
        outs = []
        for k, method in enumerate(["eager-adapt", "eager-init"]):
            if fail_after == k:
                raise OSError("injected failure between calls on the leader")
            outs.append([o.to_dict() for o in llm.eager(prompts, EagerParams(**params), method)])
        return dict(outputs=outs, calls=llm.calls)

    return run_data_parallel(LLM(ckpt, num_kv_blocks=256), main)


def grid_eager(rank: int, ckpt: str, prompts: list, params: dict, method: str) -> dict:
    """4 ranks = 2 replicas x tensor parallel 2: data-parallel EAGer over the replicas."""
    from eager_core import LLM, EagerParams
    from eager_core.eager.data_parallel import eager_data_parallel

    llm = LLM(ckpt, num_kv_blocks=256, tensor_parallel_size=2)
    outs = eager_data_parallel(llm, prompts, EagerParams(**params), method)
    tp = llm.tp
    return dict(tp_rank=tp.rank, dp_rank=tp.dp_rank, dp_size=tp.dp_size,
                outputs=None if outs is None else [o.to_dict() for o in outs])


def eval_cli(rank: int, argv: list[str]) -> int:
    """tools/eval.py's main, as torchrun would run it on this rank."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import eval as eval_tool
    from cli_common import run_main

    return run_main(eval_tool.main, argv)
