"""Policy-gradient core: masked categorical, REINFORCE with baseline (per step, or over whole
sequences), PPO; the grid robot.

    from moeplace.rl import PPO, MLPPolicy, make_vec_env
    envs = make_vec_env(lambda: gymnasium.make("CartPole-v1"), n_envs=8)
    policy = MLPPolicy(envs.single_observation_space, envs.single_action_space)
    algo = PPO(policy, envs, n_steps=32).learn(100_000)
"""

from moeplace.rl.base import OnPolicyAlgorithm
from moeplace.rl.collectors import Collector, LocalCollector, ProcessCollector, RayCollector
from moeplace.rl.distributions import MaskedCategorical
from moeplace.rl.evaluation import evaluate
from moeplace.rl.policies import MLPPolicy, flatten_obs
from moeplace.rl.ppo import PPO, PPOConfig
from moeplace.rl.reinforce import (
    REINFORCE,
    EliteBuffer,
    REINFORCEConfig,
    SequencePolicy,
    SequenceREINFORCE,
    SequenceREINFORCEConfig,
)
from moeplace.rl.rollout import Rollout, RolloutWorker
from moeplace.rl.vec import action_mask, make_vec_env, obs_to_tensor, to_vector_env

__all__ = [
    "Collector", "LocalCollector", "MLPPolicy", "MaskedCategorical", "OnPolicyAlgorithm", "PPO",
    "PPOConfig", "ProcessCollector", "REINFORCE", "REINFORCEConfig", "RayCollector", "Rollout",
    "RolloutWorker", "EliteBuffer", "SequencePolicy", "SequenceREINFORCE", "SequenceREINFORCEConfig",
    "action_mask", "evaluate", "flatten_obs", "make_vec_env", "obs_to_tensor",
    "to_vector_env",
]
