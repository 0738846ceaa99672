"""EagerParams: the knobs of entropy-aware generation, validated at the door."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from eager_core.errors import RequestError
from eager_core.sampling_params import SamplingParams
from eager_core.validation import check_bool, check_choice, check_int, check_number, named_arguments

METHODS = ("parallel", "eager-init", "eager", "eager-adapt", "deepconf", "eager-deepconf")


@named_arguments(RequestError)
@dataclass
class EagerParams:
    """Parameters of EAGer (Scalena et al., 2025) and its baselines.

    theta              branch when the entropy of the next-token distribution exceeds it (nats)
    max_sequences      M: the cap of sequences per prompt in EAGer-init, and the per-prompt budget unit
    temperature        sampling temperature for every non-branching step (the paper uses 0.6)
    top_k_entropy      K of the top-K renormalised entropy (the paper uses 20)
    entropy            "topk" (the paper's signal) or "full" (whole-vocabulary entropy)
    max_tokens         per-sequence cap of generated tokens (a branch counts its shared prefix)
    no_branch_window   a prompt stops branching after this many consecutive steps without a branch
    dynamic_threshold  effective theta = max(theta, 99th percentile of the entropies seen so far
                       for that prompt), as in the official code
    think_only         no branching after the sequence produced ``</think>`` (if the model has it)
    seed               makes the whole call reproducible
    budget_tokens      optional cap on the total generated tokens of the call (beyond the paper)
    max_retries        reallocation rounds for "eager"/"eager-adapt" (each a fresh EAGer-init run)
    """

    theta: float = 2.2
    max_sequences: int = 32
    temperature: float = 0.6
    top_k_entropy: int = 20
    entropy: str = "topk"
    max_tokens: int = 1024
    no_branch_window: int = 1000
    dynamic_threshold: bool = True
    think_only: bool = True
    seed: int = 0
    budget_tokens: int | None = None
    max_retries: int = 3

    def __post_init__(self) -> None:
        e, f = RequestError, "EagerParams."
        check_number(e, f + "theta", self.theta)
        check_int(e, f + "max_sequences", self.max_sequences, lo=1)
        check_number(e, f + "temperature", self.temperature, lo=0)
        check_int(e, f + "top_k_entropy", self.top_k_entropy, lo=1)   # past the vocabulary: the full entropy
        check_choice(e, f + "entropy", self.entropy, ("topk", "full"))
        check_int(e, f + "max_tokens", self.max_tokens, lo=1)
        check_int(e, f + "no_branch_window", self.no_branch_window, lo=1)
        check_bool(e, f + "dynamic_threshold", self.dynamic_threshold)
        check_bool(e, f + "think_only", self.think_only)
        check_int(e, f + "seed", self.seed)
        check_int(e, f + "budget_tokens", self.budget_tokens, lo=1, optional=True)
        check_int(e, f + "max_retries", self.max_retries, lo=0)

    def to_dict(self) -> dict:
        return asdict(self)

    def sampling_params(self, prompt_index: int = 0, round: int = 0, n: int = 1) -> SamplingParams:
        """The sampling side of one EAGer run of one prompt. The seed depends on the prompt's index
        in the call and the round, never on what else runs, so a prompt's tree is reproducible."""
        seed = random.Random(f"{self.seed}:{prompt_index}:{round}").getrandbits(63)
        return SamplingParams(temperature=self.temperature, n=n, seed=seed, max_tokens=self.max_tokens)

    def request_plan(self, tokenizer: Any) -> tuple[SamplingParams, Any, Any]:
        """What ``LLMEngine.add_request`` needs for one EAGer-init tree: (sampling params, step
        controller, per-request state). The same tree as ``LLM.eager([prompt], self, "eager-init")``."""
        from eager_core.eager.eager_init import EAGER_INIT, EagerState

        token_cap = self.budget_tokens   # one prompt: the whole budget is its share
        return self.sampling_params(), EAGER_INIT, EagerState(
            self, think_end_id(self, tokenizer), cap=self.max_sequences, theta=self.theta, token_cap=token_cap)


def think_end_id(params: EagerParams, tokenizer: Any) -> int | None:
    """The ``</think>`` token that ends branching (``think_only``), if the model has one."""
    return tokenizer.token_to_id("</think>") if params.think_only else None
