"""Tensor parallelism (Megatron-style) over K ranks, in SPMD style.

Every rank builds ``LLM(..., tensor_parallel_size=K)`` and makes the same calls. Per layer:

    q/k/v   column-parallel: rank r keeps query heads [r*H/K, (r+1)*H/K) and kv heads
            [r*KV/K, (r+1)*KV/K); GQA still pairs each local query head with its local kv head
    o_proj  row-parallel: the columns of the local heads; partial sums all-reduced, bias added once
    gate/up column-parallel: rows [r*I/K, (r+1)*I/K) of each
    down    row-parallel: the matching columns; all-reduced, bias added once

Embedding, norms, q/k norms and lm_head are replicated. So after the last all-reduce every rank
holds the same hidden state, computes the same logits, and its scheduler, sampler and EAGer
policy (identical code, identical seeds) choose the same tokens with no broadcast. The KV pool
of a rank holds its local kv heads only. Invariant checked on demand (``check_every``): every
rank feeds the same tokens at the same positions.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from eager_core.model.process_group import DistributedError, collective, init_distributed
from eager_core.errors import CheckpointError, ConfigError
from eager_core.model.config import ModelConfig

CHECK_ENV = "EAGER_CORE_TP_CHECK_EVERY"
DEFAULT_CHECK_EVERY = 64   # forwards between two consistency checks (one all-reduce of 2 int64); 0: never


class TensorParallel:
    """This rank's place in a tensor-parallel group, and the collectives the model needs.

    ``group`` spans the K ranks that share one model; ``dp_group`` spans the ranks with the same
    ``rank`` in every model replica (data parallelism over replicas), or is None with one replica.
    """

    def __init__(self, size: int, rank: int, group: dist.ProcessGroup | None, device: torch.device,
                 dp_group: dist.ProcessGroup | None = None, dp_rank: int = 0, dp_size: int = 1,
                 check_every: int = DEFAULT_CHECK_EVERY):
        self.size, self.rank, self.group, self.device = size, rank, group, device
        self.dp_group, self.dp_rank, self.dp_size = dp_group, dp_rank, dp_size
        self.check_every = check_every
        self._forwards = 0

    @classmethod
    def setup(cls, size: int, device: str | torch.device) -> "TensorParallel":
        """Join the process group (torchrun's environment) and carve it into model replicas of ``size`` ranks.

        Ranks [g*K, (g+1)*K) form replica g. With world size W = D*K there are D replicas; the
        data-parallel group of a rank holds the ranks with the same position in every replica.
        Every rank must call this (collectively, in the same order with the same ``size``).
        """
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"tensor_parallel_size={size!r}: expected a positive integer")
        device = init_distributed(device)
        world, me = dist.get_world_size(), dist.get_rank()
        if world % size:
            raise ConfigError(f"tensor_parallel_size={size} does not divide the world size {world} "
                              "(torchrun --nproc-per-node x --nnodes): every replica needs exactly that many ranks")
        replicas = world // size
        group = dp_group = None
        if replicas > 1:   # new_group is collective: every rank creates every group, in the same order
            for g in range(replicas):
                pg = dist.new_group(list(range(g * size, (g + 1) * size)))
                group = pg if me // size == g else group
            for r in range(size):
                pg = dist.new_group(list(range(r, world, size)))
                dp_group = pg if me % size == r else dp_group
        check_every = _check_every()
        return cls(size, me % size, group, device, dp_group, me // size, replicas, check_every)

    # --- weights -----------------------------------------------------------------------------

    def local_config(self, cfg: ModelConfig) -> ModelConfig:
        """The config of this rank's shard (heads and MLP width divided by K)."""
        k = self.size
        for name, value in (("num_attention_heads", cfg.num_heads), ("num_key_value_heads", cfg.num_kv_heads),
                            ("intermediate_size", cfg.intermediate_size)):
            if value % k:
                raise ConfigError(f"tensor_parallel_size={k}: config field {name}={value} is not divisible by {k} "
                                  f"(each rank must hold a whole number of heads and MLP rows)")
        return dataclasses.replace(cfg, num_heads=cfg.num_heads // k, num_kv_heads=cfg.num_kv_heads // k,
                                   intermediate_size=cfg.intermediate_size // k)

    def shard(self, cfg: ModelConfig, weights: dict[str, torch.Tensor]) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
        """(local config, HF-named weights with this rank's slices) for ``Transformer``.

        Slices are views (of the memory-mapped file, typically): only the local part is ever read
        and copied to the device. Global shapes are checked first, since a wrong-shaped tensor
        could still yield a right-shaped slice.
        """
        local = self.local_config(cfg)
        out = dict(weights)   # everything not listed below is replicated
        hd, h = cfg.head_dim, cfg.hidden_size
        for i in range(cfg.num_layers):
            attn, mlp = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
            for proj, heads in (("q_proj", cfg.num_heads), ("k_proj", cfg.num_kv_heads), ("v_proj", cfg.num_kv_heads)):
                self._split(out, attn + proj + ".weight", (heads * hd, h), 0)
                self._split(out, attn + proj + ".bias", (heads * hd,), 0)
            self._split(out, attn + "o_proj.weight", (h, cfg.num_heads * hd), 1)
            for proj in ("gate_proj", "up_proj"):
                self._split(out, mlp + proj + ".weight", (cfg.intermediate_size, h), 0)
                self._split(out, mlp + proj + ".bias", (cfg.intermediate_size,), 0)
            self._split(out, mlp + "down_proj.weight", (h, cfg.intermediate_size), 1)
        return local, out

    def _split(self, weights: dict[str, torch.Tensor], name: str, shape: tuple[int, ...], dim: int) -> None:
        if name not in weights:   # an absent tensor is reported by Transformer (it knows which are required)
            return
        t = weights[name]
        if tuple(t.shape) != shape:
            raise CheckpointError(f"tensor {name!r} has shape {list(t.shape)}, expected {list(shape)}")
        part = shape[dim] // self.size
        weights[name] = t.narrow(dim, self.rank * part, part)

    # --- collectives the model and the engine call ---------------------------------------------

    def reduce(self, partial: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Sum a row-parallel layer's partial outputs over the group (in place), then add its bias once."""
        with collective("tensor-parallel all-reduce"):
            dist.all_reduce(partial, group=self.group)
        return partial if bias is None else partial + bias

    def check_inputs(self, input_ids: torch.Tensor) -> None:
        """Every ``check_every`` forwards: raise if the ranks are not feeding the same tokens.

        Divergent ranks would otherwise corrupt each other's sums silently (or hang on mismatched
        shapes), so a cheap fingerprint (count and weighted sum of the ids) is compared by one
        MAX all-reduce of (x, -x).
        """
        self._forwards += 1
        if not self.check_every or self._forwards % self.check_every:
            return
        ids = input_ids.to(torch.int64)
        weights = torch.arange(1, ids.numel() + 1, device=ids.device, dtype=torch.int64)
        fp = torch.stack([ids.new_tensor(ids.numel()), (ids * weights).sum()])
        both = torch.cat([fp, -fp])
        with collective("tensor-parallel consistency check"):
            dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.group)
        if not torch.equal(both[:2], -both[2:]):
            raise DistributedError(f"tensor-parallel rank {self.rank}: ranks fed different tokens at forward "
                                   f"{self._forwards} (fingerprint {fp.tolist()}): every rank must make the same "
                                   "calls with the same arguments")

    def agree_min(self, value: int) -> int:
        """The minimum of an integer over the group (e.g. the KV pool size each rank can afford)."""
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        with collective("tensor-parallel setup"):
            dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.group)
        return int(t.item())


def _check_every() -> int:
    raw = os.environ.get(CHECK_ENV, str(DEFAULT_CHECK_EVERY))
    if not raw.isdigit():
        raise ConfigError(f"{CHECK_ENV}={raw!r}: expected an integer >= 0 (forwards between checks; 0 = never)")
    return int(raw)
