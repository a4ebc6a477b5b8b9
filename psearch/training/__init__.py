"""Training: the shared loop (``psearch.training.loop``) every trainer runs in."""
