"""Bootstrap intervals over problems, and parallel sampling matched to a method's token count.

Every accuracy metric of a setting is a mean over problems of a per-problem value (Pass@k: 1 if
some sequence is correct; Cons@k: 1 if the vote is), so its uncertainty is that of a mean over the
problems drawn: the percentile bootstrap resamples problems with replacement ``n_boot`` times and
takes the 2.5th and 97.5th percentiles of the resampled means. A *paired* interval (method minus
parallel on the same problems) resamples the per-problem differences, so the problem-to-problem
variance that both methods share cancels; that is what makes a difference of a few prompts
testable at all.

Everything is seeded (``seed``), so a results.json rebuilt from the same records has the same intervals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eager_core.eval.metrics import unbiased_pass_at_k

N_BOOT = 2000
LEVEL = 0.95


def bootstrap_ci(values: Sequence[float], n_boot: int = N_BOOT, seed: int = 0,
                 level: float = LEVEL) -> list[float] | None:
    """Percentile-bootstrap interval [lo, hi] of the mean of ``values`` (None for no values)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // x.size)   # bounded memory for large problem sets
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = x[rng.integers(0, x.size, size=(stop - start, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], n_boot: int = N_BOOT, seed: int = 0,
                        level: float = LEVEL) -> list[float] | None:
    """Interval of mean(a - b), resampling problems (pairs) together; ``a`` and ``b`` are aligned by problem."""
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap_ci: {len(a)} values against {len(b)}")
    return bootstrap_ci([x - y for x, y in zip(a, b)], n_boot, seed, level)


def fractional_pass_at_k(n: int, c: int, k: float) -> float:
    """Chen et al.'s unbiased pass@k for a real k in [0, n]: linear between floor(k) and ceil(k).

    The interpolation is the expected Pass@k of drawing floor(k) or ceil(k) samples with the
    probabilities that make the expected sample count k (pass@0 = 0: no sample solves nothing).
    """
    if not 0 <= k <= n:
        raise ValueError(f"fractional_pass_at_k needs 0 <= k <= n, got n={n}, k={k}")
    lo = int(np.floor(k))
    f = k - lo

    def p(j: int) -> float:
        return 0.0 if j == 0 else unbiased_pass_at_k(n, c, j)

    return p(lo) if f == 0 else (1 - f) * p(lo) + f * p(lo + 1)


def matched_parallel(parallel: Sequence[dict], method: Sequence[dict], method_pass: Sequence[float],
                     n_boot: int = N_BOOT, seed: int = 0) -> dict | None:
    """Parallel sampling subsampled to ``method``'s #T on the same problems, with intervals.

    ``parallel`` and ``method`` are records aligned by problem, ``method_pass`` the method's
    per-problem Pass@k. With m parallel samples per problem and T_par, T_method the two token
    totals, k = m * T_method / T_par samples per problem cost T_method in expectation; the matched
    Pass@k is the mean of ``fractional_pass_at_k`` at that k. None when the method spent more than
    the parallel run (k > m: nothing to subsample).
    """
    if not parallel or len(parallel) != len(method):
        return None
    m = min(r["num_sequences"] for r in parallel)
    t_par = sum(r["generated_tokens"] for r in parallel)
    t_method = sum(r["generated_tokens"] for r in method)
    if m == 0 or t_par == 0:
        return None
    k = m * t_method / t_par
    if k > m:
        return {"from_m": m, "k": k, "num_tokens": t_method, "pass_at_k": None, "ci95": None, "delta": None,
                "delta_ci95": None, "note": "the method spent more tokens than parallel with M samples"}
    per = [fractional_pass_at_k(r["num_sequences"], sum(s["correct"] for s in r["sequences"]), k) for r in parallel]
    diff = [a - b for a, b in zip(method_pass, per)]
    return {"from_m": m, "k": k, "num_tokens": t_method, "pass_at_k": float(np.mean(per)),
            "ci95": bootstrap_ci(per, n_boot, seed), "delta": float(np.mean(diff)),
            "delta_ci95": bootstrap_ci(diff, n_boot, seed)}
