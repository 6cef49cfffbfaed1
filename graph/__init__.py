"""Graph algorithms for curation (k-NN backends, proximity graphs); no Ray, no `curation` imports."""
