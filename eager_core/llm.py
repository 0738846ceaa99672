"""The offline entry point: ``LLM`` loads a checkpoint and serves generate / chat / eager / logits.

Every call is a loop over the online engine (``self.llm_engine``, an ``LLMEngine``): add the call's
requests, step until they finish (``LLMEngine.run_until_finished``), return their outputs in order.
``last_stats`` is the call's ``RunStats`` as a dict (its keys are a public contract).

Thread safety: every public call takes the instance's lock, so calls from several threads run one
after another and never interleave their steps. (For requests that join and leave while others
run, drive ``llm.llm_engine`` directly.)
"""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, Any, Callable

import torch

from eager_core.engine.engine_args import DTYPES, EngineArgs  # noqa: F401  (DTYPES: the accepted names)
from eager_core.engine.intake import ScoreParams
from eager_core.engine.llm_engine import LLMEngine
from eager_core.engine.outputs import RequestOutput
from eager_core.engine.sequence import Sequence
from eager_core.engine.stats import RunStats
from eager_core.errors import RequestError
from eager_core.sampling_params import SamplingParams
from eager_core.validation import check_callable, check_list, is_int

if TYPE_CHECKING:
    from eager_core.eager.params import EagerParams


class LLM:
    """Load a Hugging Face checkpoint folder (or the default SmolLM2) onto a paged-KV engine."""

    def __init__(self, ckpt: str | None = None, dtype: str = "float32", device: str = "cpu", block_size: int = 16,
                 num_kv_blocks: int | None = None, seed: int = 0, max_num_seqs: int = 256,
                 max_num_batched_tokens: int = 2048, max_model_len: int | None = None,
                 tensor_parallel_size: int = 1, enforce_eager: bool = False, enable_prefix_caching: bool = True,
                 quantization: str | None = None, *, model: str | None = None, tokenizer: str | None = None,
                 gpu_memory_utilization: float | None = None, **vllm_kwargs: Any):
        # vLLM's names work too (docs/compat.md): model= for ckpt, tokenizer=, gpu_memory_utilization=,
        # seed=None; its arguments without meaning here are accepted with a warning.
        args = EngineArgs.from_vllm(ckpt, model, seed, extra=vllm_kwargs, dtype=dtype, device=device,
                                    block_size=block_size, num_kv_blocks=num_kv_blocks, max_num_seqs=max_num_seqs,
                                    max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len,
                                    tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager,
                                    enable_prefix_caching=enable_prefix_caching, quantization=quantization,
                                    tokenizer=tokenizer, gpu_memory_utilization=gpu_memory_utilization)
        self.llm_engine = LLMEngine.from_engine_args(args)
        self._call_ids = itertools.count()
        self._lock = threading.RLock()
        self.last_stats: dict[str, Any] = {}

    # What the engine loaded, readable from the facade.
    tokenizer = property(lambda self: self.llm_engine.tokenizer)
    config = property(lambda self: self.llm_engine.config)
    model = property(lambda self: self.llm_engine.model)
    tp = property(lambda self: self.llm_engine.tp)
    device = property(lambda self: self.llm_engine.device)
    dtype = property(lambda self: self.llm_engine.dtype)
    max_model_len = property(lambda self: self.llm_engine.max_model_len)
    ckpt_dir = property(lambda self: self.llm_engine.ckpt_dir)
    kv_pool = property(lambda self: self.llm_engine.kv_pool)
    block_manager = property(lambda self: self.llm_engine.block_manager)
    scheduler = property(lambda self: self.llm_engine.scheduler)

    # --- generation -------------------------------------------------------------------------------

    def generate(self, prompts: list | str | None = None, params: SamplingParams | list | None = None,
                 prompt_token_ids: list[list[int]] | None = None,
                 on_token: Callable[[Sequence, int], None] | None = None, *,
                 sampling_params: SamplingParams | list | None = None, use_tqdm: bool = False) -> list[RequestOutput]:
        """Generate for every prompt; outputs come back in prompt order.

        vLLM's shapes work too: ``generate(prompts, sampling_params)`` with a prompt as text, token
        ids, or ``{"prompt": text}`` / ``{"prompt_token_ids": ids}``, one SamplingParams for all or a
        list with one per prompt; ``use_tqdm`` shows progress on stderr.
        """
        if sampling_params is not None:
            if params is not None:
                raise RequestError("pass params or sampling_params, not both")
            params = sampling_params
        check_callable(RequestError, "on_token", on_token)
        prompts = _prompt_list(prompts, prompt_token_ids)
        if isinstance(params, (list, tuple)):
            if len(params) != len(prompts):
                raise RequestError(f"sampling_params has {len(params)} entries for {len(prompts)} prompts")
            per_prompt = [self._sampling(p) for p in params]
        else:
            per_prompt = [self._sampling(params)] * len(prompts)
        return self._run(list(zip(prompts, per_prompt)), on_token, progress=bool(use_tqdm))

    def chat(self, messages: list[dict] | list[list[dict]], params: SamplingParams | None = None,
             **kwargs: Any) -> list[RequestOutput]:
        """Apply the checkpoint's chat template to one conversation or a list of them, then generate."""
        conversations = _conversations(messages)
        params = self._sampling(params)
        check_callable(RequestError, "on_token", kwargs.get("on_token"))
        prompts = []
        for c in conversations:
            text = self.tokenizer.apply_chat_template(c, add_generation_prompt=True)
            # The rendered template already holds any BOS it wants: encode without adding more.
            prompts.append({"prompt": text, "prompt_token_ids": self.tokenizer.encode(text, add_special_tokens=False)})
        return self._run([(p, params) for p in prompts], kwargs.get("on_token"))

    def eager(self, prompts: list, params: "EagerParams | None" = None, method: str = "eager-init",
              answers: list | None = None, checker: Callable[[str, str], bool] | None = None,
              on_step: Callable[[RunStats], None] | None = None) -> list:
        """Entropy-aware generation (EAGer) or its full-parallel baseline; see eager_core/eager/runner.py.

        A convenience entry: the method itself lives in the EAGer layer above the engine, which
        drives ``self.llm_engine`` through its public verbs. ``on_step`` gets the call's running
        statistics after every engine step (progress displays).
        """
        from eager_core.eager.params import EagerParams
        from eager_core.eager.runner import run_eager

        if isinstance(prompts, str):   # one prompt, as generate() accepts (else each character would be one)
            prompts = [prompts]
        if params is not None and not isinstance(params, EagerParams):
            raise RequestError(f"params is a {type(params).__name__}, expected EagerParams")
        check_callable(RequestError, "on_step", on_step)
        with self._lock:
            outputs, stats = run_eager(self.llm_engine, prompts, params or EagerParams(), method, answers, checker,
                                       on_step=on_step)
            self.last_stats = stats.as_dict()
            return outputs

    @torch.inference_mode()
    def logits(self, token_ids: list[int]) -> torch.Tensor:
        """Float32 logits [len(token_ids), vocab] of every position, by one scoring request through the engine."""
        check_list(RequestError, "token_ids", token_ids, is_int, "a list of token ids")
        return self._run([(list(token_ids), ScoreParams())])[0].prompt_logits

    # --- the loop ---------------------------------------------------------------------------------

    def _run(self, requests: list[tuple[Any, Any]], on_token: Callable[[Sequence, int], None] | None = None,
             progress: bool = False) -> list[RequestOutput]:
        """Add every (prompt, params), step until all finish, publish the call's statistics."""
        engine = self.llm_engine
        with self._lock:
            engine.stats = RunStats()
            engine.on_token = on_token
            ids: list[str] = []
            try:
                call = next(self._call_ids)
                for i, (prompt, params) in enumerate(requests):
                    rid = f"{call}-{i}"
                    try:
                        engine.add_request(rid, prompt, params)
                    except RequestError as e:   # name the prompt as the caller knows it
                        raise RequestError(str(e).replace(f"request {rid!r}", f"prompts[{i}]")) from None
                    ids.append(rid)
                return engine.run_until_finished(ids, _progress_line(len(ids)) if progress else None)
            except BaseException:
                engine.abort_request(ids)
                raise
            finally:
                engine.on_token = None
                self.last_stats = engine.stats.as_dict()

    @staticmethod
    def _sampling(params: SamplingParams | None) -> SamplingParams:
        if params is None:
            return SamplingParams()
        if not isinstance(params, SamplingParams):
            raise RequestError(f"params is a {type(params).__name__}, expected SamplingParams")
        return params


def _progress_line(total: int) -> Callable[[RunStats], None]:
    """``use_tqdm``: one line on stderr, redrawn every step (tokens so far, tokens/s)."""
    import sys
    import time

    start = time.perf_counter()

    def show(stats: RunStats) -> None:
        rate = stats.generated_tokens / max(time.perf_counter() - start, 1e-9)
        sys.stderr.write(f"\rgenerating {total} prompts: {stats.generated_tokens} tokens, {rate:.0f} tok/s")
        sys.stderr.flush()
    return show


def _conversations(messages: Any) -> list[list[dict]]:
    """One conversation (a list of message dicts) or a list of them, checked for that shape."""
    bad = RequestError("messages: expected a list of {'role': str, 'content': str} dicts, or a list of such lists")
    if not isinstance(messages, (list, tuple)) or not messages:
        raise bad
    conversations = [messages] if isinstance(messages[0], dict) else messages
    for conv in conversations:
        if not isinstance(conv, (list, tuple)) or not conv or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in conv):
            raise bad
    return [list(c) for c in conversations]


def _prompt_list(prompts: list[str] | str | None, prompt_token_ids: list[list[int]] | None) -> list:
    """The call's prompts as the engine takes them (text or token ids), checked for their shape."""
    if prompts is not None and prompt_token_ids is not None:
        raise RequestError("pass either prompts or prompt_token_ids, not both")
    if prompts is None and prompt_token_ids is None:
        raise RequestError("no prompts given: pass prompts=[...] or prompt_token_ids=[[...]]")
    if prompt_token_ids is not None:
        if not isinstance(prompt_token_ids, (list, tuple)) or not all(
                isinstance(ids, (list, tuple)) for ids in prompt_token_ids):
            raise RequestError("prompt_token_ids must be a list of token-id lists, e.g. [[1, 2, 3]]")
        return [list(ids) for ids in prompt_token_ids]
    if isinstance(prompts, (str, dict)):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise RequestError(f"prompts is a {type(prompts).__name__}, expected a string or a list of strings")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, dict):   # vLLM's TextPrompt {"prompt": text} / TokensPrompt {"prompt_token_ids": ids}
            if isinstance(p.get("prompt_token_ids"), (list, tuple)):
                out.append({"prompt": p.get("prompt"), "prompt_token_ids": list(p["prompt_token_ids"])})
                continue
            p = p.get("prompt")
        if not isinstance(p, str):
            raise RequestError(f"prompts[{i}] is a {type(p).__name__}, expected a string")
        if not p:   # checked on the text: a tokenizer that adds BOS would make it one token
            raise RequestError(f"prompts[{i}] is empty")
        out.append(p)
    return out
