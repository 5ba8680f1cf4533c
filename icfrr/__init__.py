"""ICFRR: Iterative Cluster-free Re-ranking for cross-domain image retrieval."""
