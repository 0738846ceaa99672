"""Scale-out with torch.distributed: tensor parallel models and data-parallel EAGer runs.

    context.py          start (or join) the process group from torchrun's environment; timeouts,
                        one-line errors for failed collectives, agreement on errors between ranks
    tensor_parallel.py  shard a checkpoint's weights over K ranks; the two all-reduces per layer
    data_parallel.py    shard the prompts of an EAGer run; one global budget; gather the outputs
    leader.py           single-process code (the eval harness) on rank 0; the other ranks serve its calls

Nothing is imported here on purpose: ``llm.py`` reaches ``tensor_parallel`` lazily, and
``data_parallel`` and ``leader`` sit above the EAGer layer (it must not load when the engine does).
See docs/distributed.md.
"""
