"""The EAGer methods over a whole prompt set: rounds, reallocation, outputs.

    parallel      every prompt: M samples at temperature T (one prefill, M-1 forks)
    eager-init    every prompt starts with one sequence and branches at high entropy, up to M
    eager         eager-init, then the saved budget goes to prompts with no correct answer yet
    eager-adapt   eager-init, then the saved budget goes to prompts that hit the cap M
    deepconf      DeepConf online: warm-up traces set a confidence threshold, the other traces stop
                  when their sliding-window confidence drops below it (confidence_runner.py)
    eager-deepconf  the same warm-up, then an EAGer-init tree whose branches are pruned below the
                  threshold, their slots given back to the prompt (confidence_runner.py)

Every run is one batched engine call over all the prompts it concerns, so all prompts and all their
branches share every decode step. Reallocation runs are fresh EAGer-init runs from the bare prompt,
capped at the sequences the prompt was allotted; retries (up to ``max_retries``) lower theta by 20%
each for prompts that had not saturated, and stop when the allotment is used.

With a ``shard`` (data parallelism, eager_core/eager/data_parallel.py) this process runs only
the prompts it owns, but every decision above is taken over the whole prompt set: after each round
the per-prompt facts (sequence count, solved, remaining allotment) and the generated-token count
are exchanged, so every process computes the same allocation. Seeds depend on the prompt's index
in ``prompts``, so the outputs do not depend on how the prompts are sharded.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from eager_core.eager.budget import allocate_extra, split_tokens
from eager_core.eager.confidence_runner import run_confidence
from eager_core.eager.deepconf_params import CONFIDENCE_METHODS, DeepConfParams
from eager_core.eager.eager_init import EAGER_INIT, EagerState
from eager_core.eager.outputs import EagerOutput, RoundResult, build_output
from eager_core.eager.params import METHODS, EagerParams, think_end_id
from eager_core.eager.rounds import RoundRunner
from eager_core.engine.llm_engine import LLMEngine
from eager_core.engine.stats import RunStats
from eager_core.errors import RequestError
from eager_core.validation import check_callable, check_choice, check_list

Checker = Callable[[str, str], bool]


class Shard(Protocol):
    """Which prompts this process runs, and the one exchange per round that makes decisions global."""

    def owns(self, index: int) -> bool:
        """True if prompt ``index`` (its position in the full prompt list) runs in this process."""

    def exchange(self, per_prompt: dict[int, Any], generated_tokens: int) -> tuple[dict[int, Any], int]:
        """Merge every process's per-prompt facts and sum their generated tokens (same result everywhere)."""


class _WholeSet:
    """The single-process shard: owns every prompt; nothing to exchange."""

    def owns(self, index: int) -> bool:
        return True

    def exchange(self, per_prompt: dict[int, Any], generated_tokens: int) -> tuple[dict[int, Any], int]:
        return per_prompt, generated_tokens


def run_eager(engine: LLMEngine, prompts: list, params: EagerParams, method: str = "eager-init",
              answers: list | None = None, checker: Checker | None = None, shard: Shard | None = None,
              on_step: Callable[[RunStats], None] | None = None) -> tuple[list[EagerOutput], RunStats]:
    """Run ``method`` over ``prompts`` (strings, chat message lists or token-id lists) with exact accounting.

    Returns (one output per prompt, in order; with a ``shard``, one per prompt it owns, in order;
    the statistics of every round of this process). ``on_step`` sees the running total after each step.
    """
    check_choice(RequestError, "method", method, METHODS)
    if not isinstance(prompts, (list, tuple)):
        raise RequestError(f"prompts is a {type(prompts).__name__}, expected a list")
    if answers is not None:
        answers = check_list(RequestError, "answers", answers, lambda a: a is not None, "a list, one answer per prompt")
    check_callable(RequestError, "checker", checker)
    check_callable(RequestError, "on_step", on_step)
    if method == "eager" and (answers is None or checker is None):
        raise RequestError("method 'eager' needs answers=[...] and checker=fn(text, answer) -> bool")
    if answers is not None and len(answers) != len(prompts):
        raise RequestError(f"answers has {len(answers)} entries for {len(prompts)} prompts")
    if not prompts:
        raise RequestError("no prompts given")
    shard = shard or _WholeSet()
    N, M = len(prompts), params.max_sequences
    if method == "parallel" and M > engine.scheduler.max_num_seqs:
        # The parallel baseline runs a prompt's M samples in one batch (a family is never split).
        raise RequestError(f"EagerParams.max_sequences={M}: the parallel method samples M sequences of a prompt "
                           f"in one batch, and the engine runs at most max_num_seqs={engine.scheduler.max_num_seqs}")
    mine = [i for i in range(N) if shard.owns(i)]
    encoded = {i: _encode(engine, prompts[i], i) for i in mine}
    think_end = think_end_id(params, engine.tokenizer)
    rounds = RoundRunner(engine, encoded, on_step)
    token_caps = split_tokens(params.budget_tokens, [1] * N) if params.budget_tokens else [None] * N
    if method in CONFIDENCE_METHODS:   # a warm-up round, then the final round (confidence_runner.py)
        conf = params if isinstance(params, DeepConfParams) else DeepConfParams.from_eager(params)
        return run_confidence(rounds, conf, method, think_end, token_caps), rounds.total

    def run(indices: list[int], rnd: int, caps: list[int], thetas: list[float], token_budget: list) -> list[RoundResult]:
        n = M if method == "parallel" else 1
        return rounds.run(rnd, [
            (i, params.sampling_params(i, rnd, n=n),
             EagerState(params, think_end, cap=caps[j], theta=thetas[j], token_cap=token_budget[j],
                        branching=method != "parallel", round=rnd, prompt_index=i))
            for j, i in enumerate(indices)], EAGER_INIT)

    runs: dict[int, list[RoundResult]] = {i: [] for i in mine}
    for res in run(list(range(N)), 0, [M] * N, [params.theta] * N, token_caps):
        runs[res.state.prompt_index].append(res)

    if method in ("eager", "eager-adapt"):
        facts, generated = shard.exchange(
            {i: (len(r[0].output.outputs), method == "eager" and _any_correct(r, answers[i], checker))
             for i, r in runs.items()}, rounds.total.generated_tokens)
        counts = [facts[i][0] for i in range(N)]
        saturated = [c >= M for c in counts]
        solved = [facts[i][1] for i in range(N)] if method == "eager" else None
        remaining = allocate_extra(method, counts, M, saturated, solved)
        tokens_left = None
        if params.budget_tokens is not None:
            tokens_left = params.budget_tokens - generated
        for retry in range(1, params.max_retries + 1):
            todo = [i for i in range(N) if remaining[i] > 0 and not (solved and solved[i])]
            if not todo or (tokens_left is not None and tokens_left <= 0):
                break
            thetas = [params.theta * (1.0 if saturated[i] else 0.8 ** retry) for i in todo]
            budget = (split_tokens(tokens_left, [remaining[i] for i in todo]) if tokens_left is not None
                      else [None] * len(todo))
            before = rounds.total.generated_tokens
            news = {}
            for res in run(todo, retry, [remaining[i] for i in todo], thetas, budget):
                i = res.state.prompt_index
                runs[i].append(res)
                ok = solved is not None and (solved[i] or _any_correct([res], answers[i], checker))
                news[i] = (remaining[i] - len(res.output.outputs), ok)
            news, generated = shard.exchange(news, rounds.total.generated_tokens - before)
            for i, (left, ok) in news.items():
                remaining[i] = left
                if solved is not None:
                    solved[i] = ok
            if tokens_left is not None:
                tokens_left -= generated
    return [build_output(runs[i], engine.tokenizer, M) for i in mine], rounds.total


def _encode(engine: LLMEngine, prompt, i: int) -> dict:
    """The prompt as the engine takes it ({prompt, prompt_token_ids}); chat messages through the template."""
    tok = engine.tokenizer
    if isinstance(prompt, str):
        if not prompt:
            raise RequestError(f"prompts[{i}] is empty")
        return {"prompt": prompt, "prompt_token_ids": tok.encode(prompt, add_special_tokens=True)}
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return {"prompt": None, "prompt_token_ids": list(prompt)}   # already token ids
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        text = tok.apply_chat_template(prompt, add_generation_prompt=True)
        return {"prompt": text, "prompt_token_ids": tok.encode(text, add_special_tokens=False)}
    raise RequestError(f"prompts[{i}] must be a string, a list of chat messages or a list of token ids, "
                       f"got {type(prompt).__name__}")


def _any_correct(results: list[RoundResult], answer, checker: Checker) -> bool:
    return any(checker(c.text, answer) for res in results for c in res.output.outputs)
