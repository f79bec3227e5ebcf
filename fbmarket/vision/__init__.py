"""Image branch: ResNet50V2 backbone and the on-disk feature cache."""
