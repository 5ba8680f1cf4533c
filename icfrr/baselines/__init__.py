"""Training-free re-ranking baselines (placeholder; replaced at merge)."""
