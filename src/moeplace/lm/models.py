"""Build a language model from its config, and turn configs to and from JSON-ready dicts."""

from __future__ import annotations

from dataclasses import asdict, fields

from moeplace.errors import CheckpointError
from moeplace.lm.base import LanguageModel
from moeplace.lm.lstm import LSTMLM, LSTMConfig
from moeplace.lm.transformer import TransformerConfig, TransformerLM

ModelConfig = TransformerConfig | LSTMConfig
FAMILIES = {"transformer": (TransformerConfig, TransformerLM), "lstm": (LSTMConfig, LSTMLM)}


def build_model(cfg: ModelConfig) -> LanguageModel:
    """The model a config describes (TransformerLM or LSTMLM)."""
    if isinstance(cfg, TransformerConfig):
        return TransformerLM(cfg)
    if isinstance(cfg, LSTMConfig):
        return LSTMLM(cfg)
    raise TypeError(f"not a model config: {type(cfg).__name__}")


def config_to_dict(cfg: ModelConfig) -> dict:
    """A JSON-ready dict of a model config (its family included)."""
    return asdict(cfg)


def config_from_dict(d: dict, source: str = "checkpoint") -> ModelConfig:
    """Rebuild a model config from config_to_dict's output; CheckpointError if it is not one."""
    family = d.get("family")
    if family not in FAMILIES:
        raise CheckpointError(f"{source}: unknown model family {family!r}")
    cls = FAMILIES[family][0]
    if d.get("num_experts") and "moe_output_scale" not in d:
        d = {**d, "moe_output_scale": 1.0}  # checkpoints written before the field existed: unscaled MoE
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise CheckpointError(f"{source}: model config has unknown fields {sorted(unknown)}")
    return cls(**d)


def describe(model: LanguageModel) -> str:
    """One line: family, parameters, active FLOPs per token, experts."""
    cfg = model.cfg  # type: ignore[attr-defined]
    experts = f"{cfg.num_experts} experts (k={cfg.k})" if cfg.num_experts else "dense"
    return (f"{cfg.family} {experts}: {model.num_params() / 1e6:.2f}M parameters, "
            f"{model.active_flops_per_token() / 1e6:.2f} MFLOPs/token forward")
