"""The sparsely-gated Mixture-of-Experts layer (knows nothing of language models or RL)."""

from moeplace.moe.dispatch import Dispatch, combine, expert_capacity, gather_tokens, sort_by_expert
from moeplace.moe.experts import ACTIVATIONS, Experts, GroupedLinear, grouped_linear
from moeplace.moe.ffn import FeedForward
from moeplace.moe.hierarchical import HierarchicalMoE
from moeplace.moe.layer import MoE, MoEModule, aux_loss, moe_stats
from moeplace.moe.padded import SlotDispatch, padded_moe, slot_by_expert
from moeplace.moe.routing import (
    ROUTERS,
    BiasBalancedRouter,
    ExpertChoiceRouter,
    NoisyTopKRouter,
    Router,
    Routing,
    SoftmaxTopKRouter,
    SwitchRouter,
    coefficient_of_variation,
    cv_squared,
    normal_cdf,
    smooth_load,
    z_loss,
)

__all__ = [
    "ACTIVATIONS", "ROUTERS", "BiasBalancedRouter", "Dispatch", "ExpertChoiceRouter", "Experts",
    "FeedForward", "GroupedLinear", "HierarchicalMoE", "MoE", "MoEModule", "NoisyTopKRouter", "Router",
    "Routing", "SlotDispatch", "SoftmaxTopKRouter", "SwitchRouter", "aux_loss", "coefficient_of_variation",
    "combine", "cv_squared", "expert_capacity", "gather_tokens", "grouped_linear", "moe_stats", "normal_cdf",
    "padded_moe", "slot_by_expert", "smooth_load", "sort_by_expert", "z_loss",
]
