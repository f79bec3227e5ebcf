"""Fusion: streaming dataset, the subclassed multimodal model, training."""
