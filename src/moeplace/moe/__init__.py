"""The sparsely-gated Mixture-of-Experts layer (knows nothing of language models or RL)."""
