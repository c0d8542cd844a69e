"""The sparsely-gated Mixture-of-Experts layer (knows nothing of language models or RL)."""

from moeplace.moe.experts import ACTIVATIONS, Experts, GroupedLinear, grouped_linear
from moeplace.moe.layer import Dispatch, MoE, MoEModule, aux_loss, expert_capacity, moe_stats, sort_by_expert
from moeplace.moe.routing import (
    ROUTERS,
    BiasBalancedRouter,
    ExpertChoiceRouter,
    NoisyTopKRouter,
    Router,
    Routing,
    SoftmaxTopKRouter,
    SwitchRouter,
    cv_squared,
    normal_cdf,
    z_loss,
)

__all__ = [
    "ACTIVATIONS", "ROUTERS", "BiasBalancedRouter", "Dispatch", "ExpertChoiceRouter", "Experts",
    "GroupedLinear", "MoE", "MoEModule", "NoisyTopKRouter", "Router", "Routing", "SoftmaxTopKRouter",
    "SwitchRouter", "aux_loss", "cv_squared", "expert_capacity", "grouped_linear", "moe_stats", "normal_cdf",
    "sort_by_expert", "z_loss",
]
