"""Evaluation metrics as defined in the EAGer paper (arXiv 2510.11170), per method and setting.

Inputs are per prompt: the list of its sequences' extracted answers (``str`` or ``None`` when
nothing was extracted) and the matching list of correctness flags. Prompts may have different
numbers of sequences (EAGer branches adaptively), so "k" is always *the number of sequences
that prompt got*, except for ``unbiased_pass_at_k`` where k is fixed.

* Pass@k: share of prompts with at least one correct sequence.
* Cons@k: share of prompts whose majority-vote answer is correct (ties: first seen; sequences
  without an extracted answer do not vote; a prompt with no answers at all counts as wrong).
* PR (pass ratio): mean over prompts of the fraction of its sequences that are correct.
* #T: total generated tokens (shared prefixes counted once; the caller supplies the counts).
* #S: mean number of sequences per prompt.
* unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k) per prompt, averaged; only
  defined when every prompt has n >= k sequences.
* weighted Cons@k (DeepConf): Cons@k with each vote weighted (by the trace's confidence), over
  the sequences the caller lets vote (``weighted_vote``).

Every function raises ``ValueError`` on empty or inconsistent input rather than returning a
number that means nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from eager_core.eval.answers import canonical_answer

METRIC_LABELS = {
    "pass_at_k": "Pass@k", "cons_at_k": "Cons@k", "pass_ratio": "PR",
    "num_tokens": "#T", "mean_sequences": "#S",
}


def _check_prompts(per_prompt: Sequence[Sequence], what: str) -> None:
    if len(per_prompt) == 0:
        raise ValueError(f"{what}: need at least one prompt, got none")


def pass_at_k(correct_flags_per_prompt: Sequence[Sequence[bool]]) -> float:
    """Pass@k: fraction of prompts with at least one correct sequence (no sequences -> wrong)."""
    _check_prompts(correct_flags_per_prompt, "pass_at_k")
    return sum(any(flags) for flags in correct_flags_per_prompt) / len(correct_flags_per_prompt)


def pass_ratio(correct_flags_per_prompt: Sequence[Sequence[bool]]) -> float:
    """PR: mean over prompts of (correct sequences / sequences); a prompt with none scores 0."""
    _check_prompts(correct_flags_per_prompt, "pass_ratio")
    total = sum(sum(map(bool, flags)) / len(flags) for flags in correct_flags_per_prompt if flags)
    return total / len(correct_flags_per_prompt)


def majority_vote(answers: Sequence[str | None],
                  key: Callable[[str], str] = canonical_answer) -> int | None:
    """Index of the first sequence carrying the majority answer, or ``None`` if none voted.

    Answers are grouped by ``key`` (by default numbers compare by value, so "1,234" and "1234"
    are one vote). ``None`` answers do not vote. Ties go to the answer seen first.
    """
    counts: dict[str, int] = {}
    first_index: dict[str, int] = {}
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        k = key(answer)
        counts[k] = counts.get(k, 0) + 1
        first_index.setdefault(k, i)
    if not counts:
        return None
    # Dicts keep insertion order, so max() returns the first-seen answer among the tied.
    winner = max(counts, key=counts.__getitem__)
    return first_index[winner]


def weighted_vote(answers: Sequence[str | None], weights: Sequence[float],
                  key: Callable[[str], str] = canonical_answer) -> int | None:
    """Index of the first sequence carrying the answer of largest total weight, or ``None`` if none voted.

    DeepConf's vote: each answer's weight is the sum of its voters' weights (their confidences).
    ``None`` answers (and ``None`` weights) do not vote; ties go to the answer seen first.
    """
    if len(answers) != len(weights):
        raise ValueError(f"weighted_vote: {len(answers)} answers but {len(weights)} weights")
    totals: dict[str, float] = {}
    first_index: dict[str, int] = {}
    for i, (answer, weight) in enumerate(zip(answers, weights)):
        if answer is None or weight is None:
            continue
        k = key(answer)
        totals[k] = totals.get(k, 0.0) + float(weight)
        first_index.setdefault(k, i)
    if not totals:
        return None
    return first_index[max(totals, key=totals.__getitem__)]


def cons_at_k(answers_per_prompt: Sequence[Sequence[str | None]],
              correct_flags_per_prompt: Sequence[Sequence[bool]],
              key: Callable[[str], str] = canonical_answer) -> float:
    """Cons@k: fraction of prompts whose majority-vote answer is correct.

    The vote's correctness is the flag of the first sequence carrying the winning answer
    (``majority_vote``), so the answer checker runs once per sequence, not again here.
    """
    _check_prompts(answers_per_prompt, "cons_at_k")
    if len(answers_per_prompt) != len(correct_flags_per_prompt):
        raise ValueError(f"cons_at_k: {len(answers_per_prompt)} prompts of answers but "
                         f"{len(correct_flags_per_prompt)} of correctness flags")
    wins = 0
    for p, (answers, flags) in enumerate(zip(answers_per_prompt, correct_flags_per_prompt)):
        if len(answers) != len(flags):
            raise ValueError(f"cons_at_k: prompt {p} has {len(answers)} answers but "
                             f"{len(flags)} correctness flags")
        winner = majority_vote(answers, key)
        wins += winner is not None and bool(flags[winner])
    return wins / len(answers_per_prompt)


def unbiased_pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al.'s unbiased pass@k for one prompt: 1 - C(n-c, k) / C(n, k).

    ``n`` samples of which ``c`` are correct; requires 1 <= k <= n and 0 <= c <= n. It is the
    probability that a uniformly drawn k-subset of the n samples contains a correct one.
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"unbiased_pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_unbiased_pass_at_k(correct_flags_per_prompt: Sequence[Sequence[bool]], k: int) -> float | None:
    """Mean of ``unbiased_pass_at_k`` over prompts, or ``None`` if some prompt has < k sequences."""
    _check_prompts(correct_flags_per_prompt, "mean_unbiased_pass_at_k")
    if any(len(flags) < k for flags in correct_flags_per_prompt):
        return None
    return sum(unbiased_pass_at_k(len(f), sum(map(bool, f)), k)
               for f in correct_flags_per_prompt) / len(correct_flags_per_prompt)


def mean_sequences(counts_per_prompt: Sequence[int]) -> float:
    """#S: mean number of sequences per prompt."""
    _check_prompts(counts_per_prompt, "mean_sequences")
    return sum(counts_per_prompt) / len(counts_per_prompt)


def summarize(correct_flags_per_prompt: Sequence[Sequence[bool]],
              answers_per_prompt: Sequence[Sequence[str | None]],
              generated_tokens: int | Sequence[int] | None = None,
              ks: Sequence[int] = (1,),
              wall_s: float | None = None,
              tokens_per_s: float | None = None,
              kv_blocks_peak: int | None = None) -> dict:
    """All metrics of one method and setting, as a JSON-ready dict.

    ``generated_tokens`` is #T, either a total or one count per prompt (summed). Keys:
    ``n_prompts, pass_at_k, cons_at_k, pass_ratio, mean_sequences, num_tokens,
    unbiased_pass_at_<k>`` for each k in ``ks`` (``None`` where some prompt has fewer than k
    sequences), and ``wall_s, tokens_per_s, kv_blocks_peak`` (passed through; ``tokens_per_s``
    is computed from #T and ``wall_s`` when not given). Absent optional inputs give ``None``.
    """
    n_prompts = len(correct_flags_per_prompt)
    if isinstance(generated_tokens, Sequence):
        if len(generated_tokens) != n_prompts:
            raise ValueError(f"summarize: {len(generated_tokens)} token counts for {n_prompts} prompts")
        generated_tokens = sum(generated_tokens)
    if tokens_per_s is None and generated_tokens is not None and wall_s:
        tokens_per_s = generated_tokens / wall_s
    result = {
        "n_prompts": n_prompts,
        "pass_at_k": pass_at_k(correct_flags_per_prompt),
        "cons_at_k": cons_at_k(answers_per_prompt, correct_flags_per_prompt),
        "pass_ratio": pass_ratio(correct_flags_per_prompt),
        "mean_sequences": mean_sequences([len(f) for f in correct_flags_per_prompt]),
        "num_tokens": generated_tokens,
    }
    for k in ks:
        result[f"unbiased_pass_at_{k}"] = mean_unbiased_pass_at_k(correct_flags_per_prompt, k)
    result.update(wall_s=wall_s, tokens_per_s=tokens_per_s, kv_blocks_peak=kv_blocks_peak)
    return result
