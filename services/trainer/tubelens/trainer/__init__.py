"""The trainer: datasets from events, models against baselines, honest evaluation, the model registry."""
