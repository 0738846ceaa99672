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
# Bounds far above any real model, checked before anything is sized from a config: a corrupt
# num_hidden_layers of 10**12 must be an error, not a list of 10**12 flags.
_MAX_SIZE = (1 << 31) - 1
_MAX_LAYERS = 1 << 16


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
        """Parse an HF config dict; raise ConfigError naming the field at fault.

        Any JSON value in any field gives either a config satisfying the class invariants or a
        ConfigError (never a TypeError/ValueError): the fields are type-checked before use.
        """
        if not isinstance(cfg, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(cfg).__name__}")
        model_type = _model_type(cfg, source)
        family = _FAMILIES[model_type]
        f = _Fields(cfg, source)
        hidden, heads = f.positive_int("hidden_size"), f.positive_int("num_attention_heads")
        kv_heads = f.positive_int("num_key_value_heads", default=heads)
        if heads % kv_heads:
            raise ConfigError(f"{source}: num_key_value_heads={kv_heads!r} must divide num_attention_heads={heads}")
        if hidden // heads == 0 and cfg.get("head_dim") is None:
            raise ConfigError(f"{source}: hidden_size={hidden} is smaller than num_attention_heads={heads} "
                              "and no head_dim is given")
        head_dim = f.positive_int("head_dim", default=hidden // heads)
        if head_dim % 2:
            raise ConfigError(f"{source}: head_dim={head_dim} must be even (rotary embeddings rotate pairs)")
        if cfg.get("use_sliding_window") and cfg.get("sliding_window"):
            raise ConfigError(f"{source}: sliding-window attention (use_sliding_window=true) is not supported")
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"{source}: hidden_act={act!r} is not supported (expected 'silu')")
        num_layers = f.positive_int("num_hidden_layers", most=_MAX_LAYERS)
        theta, scaling = _read_rope(cfg, source)
        rope_layers = [True] * num_layers
        if model_type == "smollm3" and cfg.get("no_rope_layers") is not None:
            flags = cfg["no_rope_layers"]
            if (not isinstance(flags, list) or len(flags) != num_layers
                    or not all(isinstance(x, (bool, int)) for x in flags)):
                raise ConfigError(f"{source}: no_rope_layers must list {num_layers} flags (0 or 1), got {flags!r}")
            rope_layers = [bool(x) for x in flags]  # 1 = this layer uses RoPE (transformers' convention)
        attention_bias = f.flag("attention_bias")
        eps = cfg.get("rms_norm_eps", 1e-6)
        if not _is_number(eps) or not math.isfinite(eps) or eps < 0:
            raise ConfigError(f"{source}: rms_norm_eps must be a finite number >= 0, got {eps!r}")
        bos = cfg.get("bos_token_id")
        if bos is not None and not _is_token_id(bos):
            raise ConfigError(f"{source}: bos_token_id must be a token id (integer >= 0) or null, got {bos!r}")
        eos = cfg.get("eos_token_id")
        eos_ids = [] if eos is None else [eos] if _is_token_id(eos) else eos
        if not isinstance(eos_ids, list) or not all(_is_token_id(t) for t in eos_ids):
            raise ConfigError(f"{source}: eos_token_id must be a token id, a list of them or null, got {eos!r}")
        return cls(
            model_type=model_type, vocab_size=f.positive_int("vocab_size"), hidden_size=hidden,
            intermediate_size=f.positive_int("intermediate_size"), num_layers=num_layers, num_heads=heads,
            num_kv_heads=kv_heads, head_dim=head_dim, rms_norm_eps=float(eps),
            max_position_embeddings=f.positive_int("max_position_embeddings", default=2048),
            tie_word_embeddings=f.flag("tie_word_embeddings"),
            qkv_bias=family["qkv_bias"] if family["qkv_bias"] is not None else attention_bias,
            o_bias=attention_bias and model_type != "qwen2", mlp_bias=f.flag("mlp_bias"),
            qk_norm=family["qk_norm"], rope_theta=theta, rope_scaling=scaling, rope_layers=rope_layers,
            bos_token_id=bos, eos_token_ids=list(eos_ids),
        )


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_token_id(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _model_type(cfg: dict[str, Any], source: str) -> str:
    """The family: ``model_type`` if we know it, else the first known entry of ``architectures``."""
    model_type = cfg.get("model_type")
    if isinstance(model_type, str) and model_type in _FAMILIES:
        return model_type
    archs = cfg.get("architectures") or []
    mapped = [_ARCHITECTURES[a] for a in archs if isinstance(a, str) and a in _ARCHITECTURES] \
        if isinstance(archs, list) else []
    if not mapped:
        raise ConfigError(
            f"{source}: unsupported architecture (model_type={model_type!r}, architectures={archs!r}); "
            f"supported model types: {', '.join(sorted(_FAMILIES))}")
    return mapped[0]


class _Fields:
    """Typed reads of config fields; a value of the wrong type is a ConfigError naming the field."""

    _MISSING = object()

    def __init__(self, cfg: dict[str, Any], source: str):
        self.cfg, self.source = cfg, source

    def positive_int(self, key: str, default: Any = _MISSING, most: int = _MAX_SIZE) -> int:
        value = self.cfg.get(key)
        if value is None:   # absent or null: the default, if the field has one
            if default is self._MISSING:
                raise ConfigError(f"{self.source}: missing required field {key!r}")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{self.source}: field {key!r} must be a positive integer, got {value!r}")
        if value > most:
            raise ConfigError(f"{self.source}: field {key!r} = {value} is beyond any supported model (at most {most})")
        return value

    def flag(self, key: str) -> bool:
        value = self.cfg.get(key, False)
        if value is None:
            return False
        if not isinstance(value, bool) and value not in (0, 1):
            raise ConfigError(f"{self.source}: field {key!r} must be true or false, got {value!r}")
        return bool(value)


def _read_rope(cfg: dict[str, Any], source: str) -> tuple[float, dict[str, Any] | None]:
    """Return (theta, scaling dict or None) from either spelling of the rope settings."""
    params = cfg.get("rope_parameters")
    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"{source}: rope_parameters must be an object, got {params!r}")
    if isinstance(params, dict) and isinstance(params.get("full_attention"), dict):
        params = params["full_attention"]  # per-layer-type spelling; we only have full attention
    legacy = cfg.get("rope_scaling")
    if legacy and not isinstance(legacy, dict):
        raise ConfigError(f"{source}: rope_scaling must be an object, got {legacy!r}")
    scaling = dict(params) if params is not None else (dict(legacy) if legacy else None)
    theta = (params or {}).get("rope_theta", cfg.get("rope_theta", 10000.0))
    if not _is_number(theta) or not math.isfinite(theta) or theta <= 0:
        raise ConfigError(f"{source}: rope_theta must be a positive number, got {theta!r}")
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if not isinstance(kind, str) or kind not in _ROPE_TYPES:
            raise ConfigError(f"{source}: rope type {kind!r} is not supported (supported: {', '.join(_ROPE_TYPES)})")
        if kind == "default":
            scaling = None
        else:
            scaling["rope_type"] = kind
            _check_scaling(scaling, kind, source)
    return float(theta), scaling


def _check_scaling(scaling: dict[str, Any], kind: str, source: str) -> None:
    """The numbers rope_inv_freq divides by must be finite and positive (and llama3's band non-empty)."""
    def positive(key: str, default: float | None = None) -> float:
        value = scaling.get(key, default)
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{source}: rope scaling {kind!r} needs a positive {key!r}, got {value!r}")
        return value

    positive("factor")
    if kind == "llama3":
        low, high = positive("low_freq_factor", 1.0), positive("high_freq_factor", 4.0)
        positive("original_max_position_embeddings", 8192)
        if high <= low:
            raise ConfigError(f"{source}: rope scaling 'llama3' needs high_freq_factor > low_freq_factor, "
                              f"got {high!r} <= {low!r}")
