"""Training hyperparameters (`TrainConfig`) and their JSON form, shared by the training loop and checkpoints.

Its own module so that lm/distributed.py reads checkpoints without importing lm/train.py (which imports it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from moeplace.lm.models import ModelConfig, config_from_dict, config_to_dict


@dataclass
class TrainConfig:
    """Every training hyperparameter in one place (model sizes live in `model`)."""

    model: ModelConfig
    batch_size: int = 12            # global batch (rows); a data-parallel rank takes rows [rank::world]
    lr: float = 1e-3                # peak learning rate
    min_lr: float = 1e-4            # learning rate at the end of the cosine decay
    warmup: float = 0.05            # fraction of the run spent warming up linearly
    max_steps: int = 2000           # step budget (the run ends at whichever budget is spent first)
    time_budget: float | None = None  # seconds of wall time; the LR schedule then runs over this time
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0          # 0 = no clipping
    eval_interval: int = 250        # steps between evaluations (0 = only at the end)
    eval_tokens: int | None = 16384  # validation tokens per periodic evaluation (None = whole split)
    log_interval: int = 10
    seed: int = 1337
    extra: dict = field(default_factory=dict)  # free-form notes stored with the run

    @property
    def block_size(self) -> int:
        """Context length of the model."""
        return self.model.block_size


def train_config_to_dict(cfg: TrainConfig) -> dict:
    """JSON-ready dict of a TrainConfig (model config nested)."""
    d = asdict(cfg)
    d["model"] = config_to_dict(cfg.model)
    return d


def train_config_from_dict(d: dict, source: str = "checkpoint") -> TrainConfig:
    """Inverse of train_config_to_dict."""
    d = dict(d)
    d["model"] = config_from_dict(d["model"], source)
    return TrainConfig(**d)
