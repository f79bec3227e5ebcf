"""The servable model bundle: `Bundle` (bundle.py) with its `save` / `load` pair, the files it
reads and writes (files.py; where each lives is fbmarket/layout.py), its trained parts
(parts.py), model inputs (inputs.py) and a saved bundle's settings (settings.py)."""

from fbmarket.bundle.bundle import Bundle
from fbmarket.bundle.files import PARTS, BundleError
from fbmarket.bundle.settings import load_bundle_settings

__all__ = ["PARTS", "Bundle", "BundleError", "load_bundle_settings"]
