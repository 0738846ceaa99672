"""A program written for vLLM's offline API (as the official EAGer code is): nothing here names
eager_core. It does parallel sampling, then a one-token-at-a-time loop over text prompts that
reads the top-20 log-probabilities of each token to compute its entropy, as EAGer's reference does.
Run with eager_core's vllm alias installed (tests/compat/test_vllm_compat.py)."""

import json
import math
import sys

from vllm import LLM, SamplingParams
from vllm.outputs import RequestOutput

llm = LLM(model=sys.argv[1], dtype="float32", seed=0, gpu_memory_utilization=0.01, trust_remote_code=True)
prompts = ["The capital of France is", "One, two, three,"]

parallel = llm.generate(prompts, SamplingParams(n=4, temperature=0.8, max_tokens=6, seed=1), use_tqdm=False)
assert all(isinstance(o, RequestOutput) and len(o.outputs) == 4 for o in parallel)

texts, entropies = list(prompts), [[] for _ in prompts]
for _ in range(5):   # one token per call, the prompt growing as text
    outs = llm.generate(texts, SamplingParams(temperature=0, max_tokens=1, logprobs=20))
    for i, out in enumerate(outs):
        step = out.outputs[0].logprobs[0]
        probs = [math.exp(lp.logprob) for lp in step.values()]
        z = sum(probs)
        entropies[i].append(-sum(p / z * math.log(p / z) for p in probs if p > 0))
        texts[i] += out.outputs[0].text

print(json.dumps({"parallel": [[c.token_ids for c in o.outputs] for o in parallel], "texts": texts,
                  "entropies": entropies}))
