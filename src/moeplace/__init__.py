"""moeplace: sparsely-gated Mixture-of-Experts and deep RL for device and chip placement."""

__version__ = "0.1.0"
