"""fbmarket: multimodal marketplace search and demographic-aware recommendation."""

__version__ = "0.1.0"
