"""Training: configs, the one trainer, evaluation."""
