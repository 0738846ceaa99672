"""The rounds of ``deepconf`` and ``eager-deepconf`` over a prompt set, and their outputs.

Per prompt, with W = min(warmup_traces, M):

    round 0 (warm-up)  W traces (one prefill, W-1 forks), never stopped, controller DEEPCONF without a
                       threshold. Their sampling seeds are parallel's, so they are exactly the first W
                       samples ``parallel`` draws for that prompt at the same seed.
    threshold          s = percentile(confidence_percentile) of the warm-up traces' lowest group
                       confidences (linear, numpy's default, as the official online code)
    round 1 (final)    deepconf:        M - W traces, each stopped at its first full window below s
                       eager-deepconf:  one EAGer-init tree capped at M - W unpruned sequences, its
                                        branches pruned below s, freed slots reusable by the tree

Budget: at most M sequences per prompt for ``deepconf`` (W + M - W); for ``eager-deepconf`` at
most M *unpruned* sequences, and never more generated tokens than parallel sampling could spend
(M x max_tokens per prompt, the tree's token cap). ``budget_tokens`` (if set) is split equally over
the prompts as in EAGer-init, and a prompt's final round gets its share minus its warm-up's tokens.
Every decision is per prompt, so a data-parallel shard needs no exchange here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from eager_core.eager.deepconf import DEEPCONF, DeepConfState
from eager_core.eager.deepconf_params import DeepConfParams
from eager_core.eager.eager_deepconf import EAGER_DEEPCONF
from eager_core.eager.eager_init import percentile
from eager_core.eager.outputs import EagerOutput, RoundResult, build_output
from eager_core.eager.rounds import RoundRunner
from eager_core.errors import RequestError
from eager_core.io.tokenizer import Tokenizer


@dataclass
class ConfidenceOutput(EagerOutput):
    """An ``EagerOutput`` of a DeepConf method: the prompt's threshold and each sequence's trace score."""
    confidence_threshold: float | None = None     # s (None: no warm-up trace had a confidence)
    warmup_traces: int = 0                         # the first ones of ``sequences`` (round 0)
    lowest_group_confidence: list[float | None] = field(default_factory=list)   # per sequence, in order


def warmup_threshold(state: DeepConfState, q: float) -> float | None:
    """DeepConf's s: the q-th percentile of the warm-up traces' lowest group confidences."""
    lows = sorted(x for t in state.traces.values() if (x := t.lowest_group_confidence()) is not None)
    return percentile(lows, q) if lows else None


def run_confidence(rounds: RoundRunner, params: DeepConfParams, method: str, think_end: int | None,
                   token_caps: list[int | None]) -> list[ConfidenceOutput]:
    """Both rounds of ``method`` for the prompts of ``rounds`` (this process's); outputs in prompt order.
    ``token_caps[i]`` is prompt i's share of ``budget_tokens`` (None: no token budget)."""
    engine = rounds.engine
    M = params.max_sequences
    W = min(params.warmup_traces, M)
    rest = M - W
    final_n = rest if method == "deepconf" else 1
    limit = engine.scheduler.max_num_seqs
    if max(W, final_n) > limit:   # a family's traces run in one batch (a family is never split)
        raise RequestError(f"{method}: {max(W, final_n)} traces of a prompt run in one batch, and the engine "
                           f"runs at most max_num_seqs={limit}; lower max_sequences or warmup_traces")
    mine = sorted(rounds.encoded)
    runs: dict[int, list[RoundResult]] = {i: [] for i in mine}

    warm = [(i, params.sampling_params(i, 0, n=W),
             DeepConfState(params, think_end, cap=W, theta=params.theta, token_cap=token_caps[i], branching=False,
                           round=0, prompt_index=i)) for i in mine]
    for res in rounds.run(0, warm, DEEPCONF):
        runs[res.state.prompt_index].append(res)
    thresholds = {i: warmup_threshold(runs[i][0].state, params.confidence_percentile) for i in mine}

    if rest > 0:
        plans = []
        for i in mine:
            share = token_caps[i]
            if method == "eager-deepconf":   # prune-and-branch may never cost more than parallel could
                share = min(M * params.max_tokens, share if share is not None else M * params.max_tokens)
            left = None if share is None else share - runs[i][0].state.tokens
            if left is not None and left <= 0:
                continue   # the warm-up spent the prompt's tokens
            plans.append((i, params.sampling_params(i, 1, n=final_n), DeepConfState(
                params, think_end, cap=rest, theta=params.theta, token_cap=left, branching=method == "eager-deepconf",
                round=1, prompt_index=i, conf_threshold=thresholds[i])))
        for res in rounds.run(1, plans, DEEPCONF if method == "deepconf" else EAGER_DEEPCONF):
            runs[res.state.prompt_index].append(res)
    return [confidence_output(runs[i], engine.tokenizer, M, thresholds[i]) for i in mine]


def confidence_output(results: list[RoundResult], tokenizer: Tokenizer, max_sequences: int,
                      threshold: float | None) -> ConfidenceOutput:
    """``build_output`` of the prompt's rounds, plus its threshold and each sequence's lowest group confidence."""
    base = build_output(results, tokenizer, max_sequences)
    lows = [_lowest(res.state, c.index) for res in results for c in res.output.outputs]
    return ConfidenceOutput(**{f.name: getattr(base, f.name) for f in fields(EagerOutput)},
                            confidence_threshold=threshold, warmup_traces=len(results[0].output.outputs),
                            lowest_group_confidence=lows)


def _lowest(state: DeepConfState, branch_id: int) -> float | None:
    trace = state.traces.get(branch_id)
    return None if trace is None else trace.lowest_group_confidence()
