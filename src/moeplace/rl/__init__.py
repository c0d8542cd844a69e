"""Policy-gradient core: masked categorical, REINFORCE with baseline (per step, or over whole
sequences), PPO; the grid robot.

    from moeplace.rl import PPO, MLPPolicy, make_vec_env
    envs = make_vec_env(lambda: gymnasium.make("CartPole-v1"), n_envs=8)
    policy = MLPPolicy(envs.single_observation_space, envs.single_action_space)
    algo = PPO(policy, envs, n_steps=32).learn(100_000)
"""

from moeplace.rl.base import OnPolicyAlgorithm
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
from moeplace.rl.vec import action_mask, make_vec_env, obs_to_tensor, to_vector_env

__all__ = [
    "MLPPolicy", "MaskedCategorical", "OnPolicyAlgorithm", "PPO", "PPOConfig", "REINFORCE",
    "REINFORCEConfig", "EliteBuffer", "SequencePolicy", "SequenceREINFORCE", "SequenceREINFORCEConfig",
    "action_mask", "evaluate", "flatten_obs", "make_vec_env", "obs_to_tensor",
    "to_vector_env",
]
