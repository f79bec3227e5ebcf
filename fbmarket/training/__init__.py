"""Training of the whole bundle (every branch, not only fusion): `train_bundle`.

Sits above the model packages (text/, vision/, fusion/, price/, search/) and `fbmarket.bundle`,
beside the workflow that calls it; nothing below imports it.
"""

from fbmarket.training.train import TrainResult, train_bundle

__all__ = ["TrainResult", "train_bundle"]
