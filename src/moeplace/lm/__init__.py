"""Language models built with the MoE layer: data, models, training, sampling."""
