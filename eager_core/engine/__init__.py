"""The step loop and everything it owns: LLMEngine (add_request / step / abort_request), the scheduler
(the only owner of block commits), the model runner (batch in, logits out), sequences, the sampler,
the per-step controller interface, run statistics and the CUDA-graph decode path."""
