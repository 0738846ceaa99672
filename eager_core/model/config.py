"""Model configuration: one dataclass read from a Hugging Face ``config.json``.

Every architecture we support is a variation of the same decoder (see transformer.py); this
file turns the family's config spelling into the handful of switches the decoder needs:

    llama    Llama 1/2/3, Mistral-style GQA; optional q/k/v and MLP bias; rope_scaling llama3/linear
    qwen2    Llama + bias on q/k/v (always)
    qwen3    Llama + per-head RMSNorm on q and k, explicit head_dim
    smollm3  Llama + some layers without RoPE (``no_rope_layers[i] == 0``)

Both rope spellings are read: top-level ``rope_theta``/``rope_scaling`` (transformers 4) and the
``rope_parameters`` dict (transformers 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from eager_core.errors import ConfigError

# model_type -> family switches. Architectures map onto these model types.
_FAMILIES = {
    "llama": dict(qkv_bias=None, qk_norm=False),
    "mistral": dict(qkv_bias=False, qk_norm=False),
    "qwen2": dict(qkv_bias=True, qk_norm=False),
    "qwen3": dict(qkv_bias=None, qk_norm=True),
    "smollm3": dict(qkv_bias=None, qk_norm=False),
}
_ARCHITECTURES = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3", "SmolLM3ForCausalLM": "smollm3",
}
_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass
class ModelConfig:
    """What the decoder needs to know; invariants: heads % kv_heads == 0, every size > 0."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    rope_layers: list[bool] = field(default_factory=list)  # rope_layers[i]: layer i applies RoPE
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        """Parse an HF config dict; raise ConfigError naming the field at fault."""
        if not isinstance(cfg, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(cfg).__name__}")
        model_type = cfg.get("model_type")
        if model_type not in _FAMILIES:
            archs = cfg.get("architectures") or []
            mapped = [_ARCHITECTURES[a] for a in archs if a in _ARCHITECTURES]
            if not mapped:
                raise ConfigError(
                    f"{source}: unsupported architecture (model_type={model_type!r}, architectures={archs!r}); "
                    f"supported model types: {', '.join(sorted(_FAMILIES))}")
            model_type = mapped[0]
        family = _FAMILIES[model_type]

        def need(key: str, kind: type = int) -> Any:
            if key not in cfg or cfg[key] is None:
                raise ConfigError(f"{source}: missing required field {key!r}")
            value = cfg[key]
            if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ConfigError(f"{source}: field {key!r} must be a positive integer, got {value!r}")
            return value

        hidden, heads = need("hidden_size"), need("num_attention_heads")
        kv_heads = cfg.get("num_key_value_heads") or heads
        head_dim = cfg.get("head_dim") or hidden // heads
        if not isinstance(kv_heads, int) or kv_heads <= 0 or heads % kv_heads:
            raise ConfigError(f"{source}: num_key_value_heads={kv_heads!r} must divide num_attention_heads={heads}")
        if cfg.get("use_sliding_window") and cfg.get("sliding_window"):
            raise ConfigError(f"{source}: sliding-window attention (use_sliding_window=true) is not supported")
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"{source}: hidden_act={act!r} is not supported (expected 'silu')")
        num_layers = need("num_hidden_layers")
        theta, scaling = _read_rope(cfg, source)
        rope_layers = [True] * num_layers
        if model_type == "smollm3" and cfg.get("no_rope_layers") is not None:
            flags = cfg["no_rope_layers"]
            if not isinstance(flags, list) or len(flags) != num_layers:
                raise ConfigError(f"{source}: no_rope_layers must list {num_layers} flags, got {flags!r}")
            rope_layers = [bool(f) for f in flags]  # 1 = this layer uses RoPE (transformers' convention)
        attention_bias = bool(cfg.get("attention_bias", False))
        eos = cfg.get("eos_token_id")
        return cls(
            model_type=model_type, vocab_size=need("vocab_size"), hidden_size=hidden,
            intermediate_size=need("intermediate_size"), num_layers=num_layers, num_heads=heads,
            num_kv_heads=kv_heads, head_dim=int(head_dim), rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=family["qkv_bias"] if family["qkv_bias"] is not None else attention_bias,
            o_bias=attention_bias and model_type != "qwen2", mlp_bias=bool(cfg.get("mlp_bias", False)),
            qk_norm=family["qk_norm"], rope_theta=theta, rope_scaling=scaling, rope_layers=rope_layers,
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=[] if eos is None else ([eos] if isinstance(eos, int) else list(eos)),
        )


def _read_rope(cfg: dict[str, Any], source: str) -> tuple[float, dict[str, Any] | None]:
    """Return (theta, scaling dict or None) from either spelling of the rope settings."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and "full_attention" in params and isinstance(params["full_attention"], dict):
        params = params["full_attention"]  # per-layer-type spelling; we only have full attention
    scaling = dict(params) if isinstance(params, dict) else (dict(cfg["rope_scaling"]) if cfg.get("rope_scaling") else None)
    theta = (params or {}).get("rope_theta", cfg.get("rope_theta", 10000.0))
    if not isinstance(theta, (int, float)) or not math.isfinite(theta) or theta <= 0:
        raise ConfigError(f"{source}: rope_theta must be a positive number, got {theta!r}")
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind not in _ROPE_TYPES:
            raise ConfigError(f"{source}: rope type {kind!r} is not supported (supported: {', '.join(_ROPE_TYPES)})")
        if kind == "default":
            scaling = None
        else:
            scaling["rope_type"] = kind
            if not isinstance(scaling.get("factor"), (int, float)) or scaling["factor"] <= 0:
                raise ConfigError(f"{source}: rope scaling {kind!r} needs a positive 'factor'")
    return float(theta), scaling
