"""A rank of the data-parallel DeepConf test (imported by the spawned processes, hence its own module)."""

from __future__ import annotations


def dp_confidence(rank: int, ckpt: str, prompts: list, params: dict, methods: list[str]) -> list | None:
    """Data-parallel runs of the DeepConf methods; rank 0 returns every output (as dicts) and the stats."""
    from eager_core import LLM
    from eager_core.eager.data_parallel import eager_data_parallel, is_main_process
    from eager_core.eager.deepconf_params import DeepConfParams

    llm = LLM(ckpt, num_kv_blocks=256)
    results = []
    for method in methods:
        outs = eager_data_parallel(llm, prompts, DeepConfParams(**params), method)
        if is_main_process():
            results.append(dict(outputs=[o.to_dict() for o in outs], stats=llm.last_stats))
    return results if is_main_process() else None
