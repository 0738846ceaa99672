"""DeepConfParams: the knobs of DeepConf and EAGer-DeepConf, named after the paper's terms.

DeepConf is Fu et al., 2025, "Deep Think with Confidence" (code: facebookresearch/deepconf). Its
online variant, per prompt: ``warmup_traces`` traces run to the end; the threshold s is the
``confidence_percentile``-th percentile of their lowest group confidences; every later trace stops
at the first full window of ``window_size`` steps whose mean token confidence (top
``top_k_confidence`` log-probabilities) is below s; the answer is a vote weighted by confidence.

Why a subclass of ``EagerParams`` and not a separate object: ``LLM.eager``, the data-parallel
announcement (eager/leader.py) and the eval harness all carry exactly one params object of type
``EagerParams``. A subclass travels through all of them unchanged, and the DeepConf methods keep
every EAGer knob (M, temperature, max tokens, seed, theta for EAGer-DeepConf's branching) with the
same meaning. ``EagerParams`` itself gains no field.
"""

from __future__ import annotations

from dataclasses import dataclass

from eager_core.eager.params import EagerParams
from eager_core.errors import RequestError
from eager_core.validation import check_int, check_number

CONFIDENCE_METHODS = ("deepconf", "eager-deepconf")


@dataclass
class DeepConfParams(EagerParams):
    """``EagerParams`` plus DeepConf's online parameters (defaults: the official online script's, but N_init).

    warmup_traces          N_init: traces per prompt sampled first, never stopped, that set the threshold.
                           They count against M (the official script: 16 of 256); capped at M
    confidence_percentile  s = this percentile (linear, numpy's) of the warm-up traces' lowest group
                           confidences: 90 is DeepConf-low (keeps the top eta = 10%), 10 DeepConf-high (eta = 90%)
    window_size            the group size: steps in the sliding window of a group confidence (paper: 2048,
                           for traces of tens of thousands of tokens; scale it to ``max_tokens``)
    top_k_confidence       k of the token confidence: -mean of the top-k log-probabilities (paper: 20)
    """

    warmup_traces: int = 4
    confidence_percentile: float = 90.0
    window_size: int = 2048
    top_k_confidence: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        e, f = RequestError, "DeepConfParams."
        check_int(e, f + "warmup_traces", self.warmup_traces, lo=1)
        check_number(e, f + "confidence_percentile", self.confidence_percentile, lo=0, hi=100)
        check_int(e, f + "window_size", self.window_size, lo=1)
        check_int(e, f + "top_k_confidence", self.top_k_confidence, lo=1)

    @classmethod
    def from_eager(cls, params: EagerParams, **deepconf: object) -> "DeepConfParams":
        """These EAGer params with DeepConf's (defaults unless given)."""
        fields = params.to_dict()
        fields.update(deepconf)
        return cls(**fields)

    def deepconf_dict(self) -> dict:
        """Only DeepConf's own fields (what a sweep setting records besides theta and M)."""
        return dict(warmup_traces=self.warmup_traces, confidence_percentile=self.confidence_percentile,
                    window_size=self.window_size, top_k_confidence=self.top_k_confidence)
