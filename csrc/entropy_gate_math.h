/*
 * entropy_gate_math.h: the arithmetic both kernels share, host and device.
 *
 * A set of logits is summarised by its max m and, relative to it,
 *     S = sum_i exp(x_i - m)            T = sum_i exp(x_i - m) * (x_i - m)
 * (a term whose exp underflows to 0 counts as 0, so -inf masks never produce 0 * -inf).
 * Then  logsumexp = m + log S  and  entropy = -sum p log p = log S - T / S.
 * Two summaries combine exactly (eg_combine), which is what makes one pass, split rows and
 * block reductions possible. Working relative to m keeps every exp in (0, 1].
 *
 * No torch header here: the .cu file includes this.
 */
#ifndef EAGER_CORE_ENTROPY_GATE_MATH_H
#define EAGER_CORE_ENTROPY_GATE_MATH_H

#include <math.h>
#include <stdint.h>

#include "entropy_gate.h"

#ifdef __CUDACC__
#define EG_HD __host__ __device__ __forceinline__
#else
#define EG_HD inline
#endif

EG_HD float eg_exp(float x) { return expf(x); }
EG_HD double eg_exp(double x) { return exp(x); }
EG_HD float eg_log(float x) { return logf(x); }
EG_HD double eg_log(double x) { return log(x); }

/* Fold summary (m2, S2, T2) into (m, S, T). An empty summary has S == 0 (m is then ignored). */
template <typename Acc>
EG_HD void eg_combine(float& m, Acc& S, Acc& T, float m2, Acc S2, Acc T2) {
  if (!(S2 > Acc(0))) return;
  if (!(S > Acc(0))) {
    m = m2; S = S2; T = T2;
    return;
  }
  if (m2 > m) {  // keep the larger max in (m, S, T) so the scale factor is <= 1
    const float tm = m; const Acc tS = S, tT = T;
    m = m2; S = S2; T = T2;
    m2 = tm; S2 = tS; T2 = tT;
  }
  const Acc d = Acc(m2) - Acc(m);
  const Acc a = eg_exp(d);
  // Shifting the reference from m2 to m adds d to every (x - m2) term: T2 + d * S2.
  T += a * (T2 + d * S2);
  S += a * S2;
}

/* Shannon entropy in nats of the summary; 0 for an empty one. Rounding can push the exact
 * value 0 (a one-hot row) slightly negative, hence the clamp. */
template <typename Acc>
EG_HD float eg_entropy(Acc S, Acc T) {
  if (!(S > Acc(0))) return 0.0f;
  const Acc h = eg_log(S) - T / S;
  return h > Acc(0) ? float(h) : 0.0f;
}

/* Entropy of the first k entries of a best-first list of logits, renormalised. */
EG_HD float eg_list_entropy(const float* vals, int64_t k) {
  const float m = vals[0];
  double S = 0.0, T = 0.0;
  if (!(m > -INFINITY)) return 0.0f;
  for (int64_t j = 0; j < k; ++j) {
    const double d = double(vals[j]) - double(m);
    const double e = exp(d);
    if (e > 0.0) { S += e; T += e * d; }
  }
  return eg_entropy(S, T);
}

/*
 * Write every output of one row.
 *   m, S, T      summary of the whole row;  bad: the row holds NaN or +inf;
 *   vals, ids    best-first list of the row's largest logits (ties: lower id first), n valid
 *                (n >= min(out_k, vocab): the kernels size their lists for out_k);
 *   topk_outside entropy_topk computed by the caller, used only when the list is shorter than
 *                top_k < vocab (NaN when unknown: the branch is then false for kind "topk").
 */
EG_HD void eg_finalize_row(const EgArgs& a, int64_t row, float m, double S, double T, bool bad,
                           const float* vals, const int64_t* ids, int n, float topk_outside) {
  const EgOutputs& o = a.out;
  const float nan = NAN;
  const bool empty = !(S > 0.0);  // every logit is -inf: there is no distribution
  const float lse = empty ? -INFINITY : float(double(m) + log(S));
  const float h = eg_entropy(S, T);
  float hk;
  if (a.top_k >= a.vocab) hk = h;
  else if (a.top_k <= n) hk = eg_list_entropy(vals, a.top_k);
  else hk = topk_outside;
  if (empty) hk = 0.0f;

  for (int j = 0; j < 2; ++j) {
    const bool present = j < n;
    o.top2_ids[2 * row + j] = present ? ids[j] : -1;
    // (v - m) - log S, not v - lse: with |logits| ~ 1e30, lse rounds to m and the
    // difference would lose log S entirely.
    o.top2_logprobs[2 * row + j] =
        (present && !empty) ? float((double(vals[j]) - double(m)) - log(S)) : -INFINITY;
  }
  for (int64_t j = 0; j < a.out_k; ++j) {
    const bool present = j < n;
    a.out.topk_ids[a.out_k * row + j] = present ? ids[j] : -1;
    a.out.topk_logprobs[a.out_k * row + j] =
        bad ? nan : ((present && !empty) ? float((double(vals[j]) - double(m)) - log(S)) : -INFINITY);
  }
  const float thr = a.thresholds ? a.thresholds[row] : a.threshold;
  const float chosen = a.use_topk ? hk : h;
  o.has_nan[row] = bad;
  o.branch[row] = !bad && !empty && chosen > thr;
  if (bad) {  // no number read from such a row means anything: make that visible
    o.entropy[row] = nan; o.entropy_topk[row] = nan; o.logsumexp[row] = nan;
    o.top2_logprobs[2 * row] = nan; o.top2_logprobs[2 * row + 1] = nan;
  } else {
    o.entropy[row] = h; o.entropy_topk[row] = hk; o.logsumexp[row] = lse;
  }
}

#endif /* EAGER_CORE_ENTROPY_GATE_MATH_H */
