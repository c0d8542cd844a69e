"""Device placement: op graphs from nn.Modules, clusters, a step-time simulator, heuristics."""
