"""The public entry point: ``LLM`` loads a checkpoint and serves generate / chat / logits.

Thread safety: one ``LLM`` holds one engine; every public call takes the instance's lock, so calls
from several threads run one after another and never interleave their steps.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from eager_core.cache.block_manager import BlockManager
from eager_core.cache.kv_pool import KVPool, default_num_blocks
from eager_core.decode_graphs import DecodeGraphs
from eager_core.engine import Engine, Policy, SamplingPolicy
from eager_core.errors import ConfigError, RequestError
from eager_core.io.checkpoint import load_weights, read_config
from eager_core.io.tokenizer import Tokenizer
from eager_core.model.config import ModelConfig
from eager_core.model.transformer import Transformer
from eager_core.model_runner import ModelRunner
from eager_core.outputs import RequestOutput, request_output
from eager_core.sampling_params import SamplingParams
from eager_core.scheduler import Scheduler
from eager_core.sequence import Request, Sequence

if TYPE_CHECKING:
    from eager_core.eager.params import EagerParams

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LLM:
    """Load a Hugging Face checkpoint folder (or the default SmolLM2) onto a paged-KV engine."""

    def __init__(self, ckpt: str | None = None, dtype: str = "float32", device: str = "cpu", block_size: int = 16,
                 num_kv_blocks: int | None = None, seed: int = 0, max_num_seqs: int = 256,
                 max_num_batched_tokens: int = 2048, max_model_len: int | None = None,
                 tensor_parallel_size: int = 1, enforce_eager: bool = False):
        if dtype not in DTYPES:
            raise ConfigError(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
        if not isinstance(block_size, int) or block_size < 1:
            raise ConfigError(f"block_size={block_size!r}: expected a positive integer")
        if num_kv_blocks is not None and (not isinstance(num_kv_blocks, int) or num_kv_blocks < 1):
            raise ConfigError(f"num_kv_blocks={num_kv_blocks!r}: expected a positive integer or None")
        for name, value in (("max_num_seqs", max_num_seqs), ("max_num_batched_tokens", max_num_batched_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}={value!r}: expected a positive integer")
        if not isinstance(enforce_eager, bool):
            raise ConfigError(f"enforce_eager={enforce_eager!r}: expected True or False")
        if max_model_len is not None and (not isinstance(max_model_len, int) or max_model_len < 2):
            raise ConfigError(f"max_model_len={max_model_len!r}: expected an integer >= 2 or None")
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ConfigError(f"device={device!r}: {e}") from e
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device={str(device)!r}: CUDA is not available (this torch build or machine has no GPU)")
        if ckpt is None:   # the default model: converted from the installed GGUF once, then cached
            from eager_core.io.default_model import default_checkpoint
            ckpt = default_checkpoint()
        self.ckpt_dir = Path(ckpt)
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype]
        self.config = ModelConfig.from_hf(read_config(self.ckpt_dir), source=str(self.ckpt_dir / "config.json"))
        self.tokenizer = Tokenizer.from_dir(self.ckpt_dir)
        # Tensor parallel (SPMD: every rank of the group runs this same code): this rank's heads only.
        self.tp, model_cfg, weights = None, self.config, load_weights(self.ckpt_dir)
        if tensor_parallel_size != 1:
            from eager_core.distributed.tensor_parallel import TensorParallel
            self.tp = TensorParallel.setup(tensor_parallel_size, self.device)
            self.device = self.tp.device
            model_cfg, weights = self.tp.shard(self.config, weights)
        self.model = Transformer(model_cfg, weights, self.dtype, self.device, tp=self.tp)
        self.max_model_len = min(max_model_len or self.config.max_position_embeddings,
                                 self.config.max_position_embeddings)
        if num_kv_blocks is None:
            num_kv_blocks = default_num_blocks(model_cfg, self.dtype, block_size, self.device,
                                               self.max_model_len * max_num_seqs)
        if self.tp is not None:   # same pool size on every rank, or their schedulers would diverge
            num_kv_blocks = self.tp.agree_min(num_kv_blocks)
        self.block_manager = BlockManager(num_kv_blocks, block_size)
        self.kv_pool = KVPool(model_cfg, num_kv_blocks, block_size, self.dtype, self.device)
        self.scheduler = Scheduler(self.block_manager, max_num_seqs, max_num_batched_tokens)
        # On a GPU, decode steps replay CUDA graphs unless enforce_eager (vLLM's name for the switch).
        graphs = None
        if self.device.type == "cuda" and not enforce_eager and self.tp is None:
            graphs = DecodeGraphs(self.model, self.kv_pool, max_batch=min(max_num_seqs, 128),
                                  max_context=self.max_model_len)
        self.engine = Engine(ModelRunner(self.model, self.kv_pool, self.block_manager, graphs), self.scheduler,
                             self.tokenizer, self.max_model_len)
        self._seed_stream = random.Random(seed)
        self._next_request_id = 0
        self._lock = threading.RLock()
        self.last_stats: dict[str, Any] = {}

    # --- generation -------------------------------------------------------------------------------

    def generate(self, prompts: list[str] | str | None = None, params: SamplingParams | None = None,
                 prompt_token_ids: list[list[int]] | None = None,
                 on_token: Callable[[Sequence, int], None] | None = None) -> list[RequestOutput]:
        """Generate for every prompt (text or token ids); outputs come back in prompt order."""
        params = params or SamplingParams()
        with self._lock:
            requests = [self._make_request(p, ids, params) for p, ids in self._prompt_pairs(prompts, prompt_token_ids)]
            self.run_requests(requests, SamplingPolicy(), on_token)
            return [request_output(r, self.tokenizer) for r in requests]

    def chat(self, messages: list[dict] | list[list[dict]], params: SamplingParams | None = None,
             **kwargs: Any) -> list[RequestOutput]:
        """Apply the checkpoint's chat template to one conversation or a list of them, then generate."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        prompts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True) for c in conversations]
        params = params or SamplingParams()
        with self._lock:
            # The rendered template already holds any BOS it wants: encode without adding more.
            requests = [self._make_request(p, ids, params)
                        for p, ids in self._prompt_pairs(prompts, None, add_special_tokens=False)]
            self.run_requests(requests, SamplingPolicy(), kwargs.get("on_token"))
            return [request_output(r, self.tokenizer) for r in requests]

    def eager(self, prompts: list, params: "EagerParams | None" = None, method: str = "eager-init",
              answers: list | None = None, checker: Callable[[str, str], bool] | None = None) -> list:
        """Entropy-aware generation (EAGer) or its full-parallel baseline; see eager_core/eager/runner.py.

        A convenience entry: the method itself lives in the EAGer layer above the engine.
        """
        from eager_core.eager.params import EagerParams
        from eager_core.eager.runner import run_eager

        if isinstance(prompts, str):   # one prompt, as generate() accepts (else each character would be one)
            prompts = [prompts]
        if params is not None and not isinstance(params, EagerParams):
            raise RequestError(f"params is a {type(params).__name__}, expected EagerParams")
        with self._lock:
            return run_eager(self, prompts, params or EagerParams(), method, answers, checker)

    @torch.inference_mode()
    def logits(self, token_ids: list[int]) -> torch.Tensor:
        """Float32 logits [len(token_ids), vocab] of every position, by a prefill through the paged cache."""
        with self._lock:
            req = self._make_request(None, list(token_ids), SamplingParams(max_tokens=1))
            seq = req.new_sequence(-1, list(token_ids))
            chunk, rows = self.scheduler.max_num_batched_tokens, []
            try:
                if self.block_manager.blocks_for_write([], 0, len(token_ids)) > self.block_manager.num_free:
                    raise RequestError(f"logits: {len(token_ids)} tokens do not fit in the free KV pool")
                while seq.num_computed < len(token_ids):
                    n = min(chunk, len(token_ids) - seq.num_computed)
                    logits, _ = self.engine.runner.run([(seq, n)], num_decode=0, all_logits=True)
                    rows.append(logits)
            finally:
                # Non-finite keys/values must not outlive the call in freed blocks (see Engine._drop_bad_rows).
                dirty = not all(bool(torch.isfinite(r).all()) for r in rows)
                dying = [b for b in seq.block_table if self.block_manager.ref_count[b] == 1] if dirty else []
                self.block_manager.free(seq.block_table)
                self.kv_pool.zero_blocks(dying)
            return torch.cat(rows)

    # --- shared plumbing (also used by the EAGer layer) --------------------------------------------

    def run_requests(self, requests: list[Request], policy: Policy,
                     on_token: Callable[[Sequence, int], None] | None = None) -> None:
        """Run requests to completion with one policy; stats land in ``last_stats``.

        On any exception (KeyboardInterrupt included) every block goes back to the pool, so the
        engine is usable for the next call.
        """
        with self._lock:
            engine = self.engine
            engine.reset_stats()
            engine.on_token = on_token
            try:
                for req in requests:
                    engine.add_request(req)
                    engine.stats["prompt_tokens"] += len(req.prompt_token_ids)
                engine.run(policy)
            except BaseException:
                engine.abort()
                raise
            finally:
                engine.on_token = None
                engine.requests.clear()
                self.last_stats = dict(engine.stats)

    def _prompt_pairs(self, prompts: list[str] | str | None, prompt_token_ids: list[list[int]] | None,
                      add_special_tokens: bool = True) -> list[tuple[str | None, list[int]]]:
        if prompts is not None and prompt_token_ids is not None:
            raise RequestError("pass either prompts or prompt_token_ids, not both")
        if prompts is None and prompt_token_ids is None:
            raise RequestError("no prompts given: pass prompts=[...] or prompt_token_ids=[[...]]")
        if prompt_token_ids is not None:
            if not isinstance(prompt_token_ids, (list, tuple)) or not all(
                    isinstance(ids, (list, tuple)) for ids in prompt_token_ids):
                raise RequestError("prompt_token_ids must be a list of token-id lists, e.g. [[1, 2, 3]]")
            return [(None, list(ids)) for ids in prompt_token_ids]
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)):
            raise RequestError(f"prompts is a {type(prompts).__name__}, expected a string or a list of strings")
        pairs = []
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise RequestError(f"prompts[{i}] is a {type(p).__name__}, expected a string")
            if not p:   # checked on the text: a tokenizer that adds BOS would make it one token
                raise RequestError(f"prompts[{i}] is empty")
            pairs.append((p, self.tokenizer.encode(p, add_special_tokens=add_special_tokens)))
        return pairs

    def _make_request(self, prompt: str | None, ids: list[int], params: SamplingParams) -> Request:
        where = f"request {self._next_request_id}"
        if not ids:
            raise RequestError(f"{where}: empty prompt (no tokens)")
        vocab = self.config.vocab_size
        if not isinstance(params, SamplingParams):
            raise RequestError(f"params is a {type(params).__name__}, expected SamplingParams")
        if any((not isinstance(t, int)) or isinstance(t, bool) or t < 0 or t >= vocab for t in ids):
            raise RequestError(f"{where}: prompt token ids must be integers in [0, {vocab})")
        if len(ids) >= self.max_model_len:
            raise RequestError(f"{where}: prompt has {len(ids)} tokens, the model's context is {self.max_model_len}")
        seed = params.seed if params.seed is not None else self._seed_stream.getrandbits(63)
        req = Request(self._next_request_id, prompt, ids, params, seed)
        self._next_request_id += 1
        return req
