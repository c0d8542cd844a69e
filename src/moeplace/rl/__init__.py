"""Policy-gradient core: masked categorical, REINFORCE with baseline, PPO; the grid robot."""
