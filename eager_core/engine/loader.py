"""From EngineArgs to a ready engine: config, tokenizer, weights, KV pool, scheduler, runner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from eager_core.cache.block_manager import BlockManager
from eager_core.cache.kv_pool import KVPool, check_pool_fits, default_num_blocks
from eager_core.engine.decode_graphs import DecodeGraphs
from eager_core.engine.engine_args import EngineArgs
from eager_core.engine.model_runner import ModelRunner
from eager_core.engine.scheduler import Scheduler
from eager_core.io.checkpoint import load_weights, read_config
from eager_core.io.tokenizer import Tokenizer
from eager_core.model.config import ModelConfig
from eager_core.model.transformer import Transformer


@dataclass
class EngineParts:
    ckpt_dir: Path
    config: ModelConfig
    tokenizer: Tokenizer
    model: Transformer
    tp: object | None              # TensorParallel, when the model is sharded over ranks
    device: torch.device
    max_model_len: int
    runner: ModelRunner
    scheduler: Scheduler


def load_engine_parts(args: EngineArgs) -> EngineParts:
    ckpt = args.ckpt
    if ckpt is None:   # the default model: converted from the installed GGUF once, then cached
        from eager_core.io.default_model import default_checkpoint
        ckpt = default_checkpoint()
    ckpt_dir = Path(ckpt)
    device = torch.device(args.device)
    if args.dtype == "auto":   # vLLM's default: the checkpoint's own dtype, where this engine runs it
        torch_dtype = str(read_config(ckpt_dir).get("torch_dtype") or "float32").replace("torch.", "")
        args.dtype = torch_dtype if torch_dtype in ("float32", "bfloat16", "float16") else "float32"
    dtype = args.torch_dtype
    config = ModelConfig.from_hf(read_config(ckpt_dir), source=str(ckpt_dir / "config.json"))
    tokenizer = Tokenizer.from_dir(args.tokenizer or ckpt_dir)
    # Tensor parallel (SPMD: every rank of the group runs this same code): this rank's heads only.
    # Cast while reading (one tensor at a time) unless int8 quantizes from the checkpoint's own values.
    tp, model_cfg, weights = None, config, load_weights(ckpt_dir, dtype if args.quantization is None else None)
    if args.tensor_parallel_size != 1:
        from eager_core.model.tensor_parallel import TensorParallel
        tp = TensorParallel.setup(args.tensor_parallel_size, device)
        device = tp.device
        model_cfg, weights = tp.shard(config, weights)
    model = Transformer(model_cfg, weights, dtype, device, tp=tp, quantization=args.quantization, release_weights=True)
    del weights
    max_model_len = min(args.max_model_len or config.max_position_embeddings, config.max_position_embeddings)
    num_kv_blocks = args.num_kv_blocks
    if num_kv_blocks is None:
        num_kv_blocks = default_num_blocks(model_cfg, dtype, args.block_size, device, max_model_len * args.max_num_seqs,
                                           args.gpu_memory_utilization)
    if tp is not None:   # same pool size on every rank, or their schedulers would diverge
        num_kv_blocks = tp.agree_min(num_kv_blocks)
    check_pool_fits(model_cfg, dtype, args.block_size, num_kv_blocks, device)
    kv_pool = KVPool(model_cfg, num_kv_blocks, args.block_size, dtype, device)
    scheduler = Scheduler(BlockManager(num_kv_blocks, args.block_size, enable_caching=args.enable_prefix_caching),
                          args.max_num_seqs, args.max_num_batched_tokens)
    # On a GPU, decode steps replay CUDA graphs unless enforce_eager (vLLM's name for the switch).
    graphs = None
    if device.type == "cuda" and not args.enforce_eager and tp is None:
        graphs = DecodeGraphs(model, kv_pool, max_batch=min(args.max_num_seqs, 128), max_context=max_model_len)
    return EngineParts(ckpt_dir, config, tokenizer, model, tp, device, max_model_len,
                       ModelRunner(model, kv_pool, graphs), scheduler)
