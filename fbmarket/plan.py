"""Choose the training configuration from the data's size and a time budget.

`fbmarket train --data DIR` with no other flag must give the configuration worth
serving, whether DIR holds 300 listings or 5,000: a fixed default is either the
5-minute demo (too little for real data: the image branch stays at chance) or the
half-hour real-data run (too slow for `python main.py`). So the trainer estimates each
tier's wall time from the listing and photo counts, with per-item costs measured on
the 2-core development machine, and takes the richest tier that fits
`Settings.time_budget_min` (default 30 minutes for `train`; `run`, i.e. `python main.py`,
uses `RUN_BUDGET_MIN` so the synthetic demo stays under 5 minutes end to end).

Costs (2-core CPU, TensorFlow 2.21, dev data, `fbmarket train` with the machine to
itself): EfficientNet-Lite2 at 260 px ~23 photos/s (9,312 photos in 410 s) and Lite0 at
224 px ~60 photos/s (issue 13's measurement); the text branch with character n-grams ~14.5
ms per training listing per epoch (695 s for 13 epochs over 3,707 listings), about half
that without them; the fusion stage, text encoder frozen, ~9 ms (31-40 s an epoch). Fixed
costs (cleaning and caching photos, tokenising, Word2Vec, evaluation, embedding and
indexing the catalogue, the buyer simulator and ranker) are ~5 min on the dev data. The
figures are estimates for choosing, reported beside the choice, never promises.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from fbmarket.config import Settings

log = logging.getLogger(__name__)

TRAIN_BUDGET_MIN = 30.0  # `fbmarket train`: the dev data's full configuration fits
RUN_BUDGET_MIN = 4.0  # `python main.py` / `fbmarket run`: the whole demo stays under 5 min

PHOTOS_PER_S = {
    "efficientnet_lite2": 19.0,
    "efficientnet_lite0": 60.0,
}  # at the native size (Lite2: 18.5-21 measured)
NATIVE_SIZE = {"efficientnet_lite2": 260, "efficientnet_lite0": 224}
TEXT_MS_PER_LISTING_EPOCH = {True: 14.5, False: 7.0}  # with / without character n-grams
FUSION_MS_PER_LISTING_EPOCH = 9.0  # text encoder frozen (FusionSettings.freeze_text)
FIXED_S_PER_1000_LISTINGS = 57.0  # photos, tokenise, Word2Vec, evaluation, index, ranker: ~5 min for 5,300
LATE_FUSION_S_PER_1000_LISTINGS = 16.0  # two TF-IDF fits, val predictions, head refit: 74-97 s on 5,297


@dataclass(frozen=True)
class Tier:
    """One training configuration, richest first in TIERS."""

    name: str
    char_ngrams: int
    text_frozen_epochs: int
    text_finetune_epochs: int
    fusion_epochs: int
    fusion_patience: int
    lite_variant: str
    feature_size: int = 0  # 0: the backbone's native resolution


TIERS: tuple[Tier, ...] = (
    # the real-data configuration (benchmarks/train_real.py): character n-grams add ~1.5
    # points of root accuracy on the dev data; Lite2 at 260 px 0.566 vs Lite0 0.537 image-only
    # text validation accuracy stops rising after ~6 epochs on the dev data (0.830 at 6,
    # 0.819-0.831 for epochs 7-10, fine-tuning included); 8+2 text epochs with the late
    # fusion took 30 min 33 s, so the full tier trains 7+1
    Tier("full", 5, 7, 1, 12, 4, "efficientnet_lite2"),
    Tier("standard", 5, 8, 3, 12, 4, "efficientnet_lite0"),
    # the demo's: plain photos of a synthetic catalogue need no 224 px (cost ~ pixels)
    Tier("small", 0, 8, 3, 12, 4, "efficientnet_lite0", 160),
)


@dataclass(frozen=True)
class TrainingPlan:
    tier: str
    estimated_min: float
    budget_min: float
    train_listings: int
    photos: int
    note: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def estimate_seconds(tier: Tier, train_listings: int, listings: int, photos: int) -> float:
    """Wall-time estimate of training one tier (seconds); see the module docstring for sources."""
    text = train_listings * (tier.text_frozen_epochs + tier.text_finetune_epochs)
    text_s = text * TEXT_MS_PER_LISTING_EPOCH[tier.char_ngrams > 0] / 1000
    fusion_s = train_listings * tier.fusion_epochs * FUSION_MS_PER_LISTING_EPOCH / 1000
    native = NATIVE_SIZE[tier.lite_variant]
    size = tier.feature_size or native
    photo_s = photos / (PHOTOS_PER_S[tier.lite_variant] * (native / size) ** 2)
    fixed = FIXED_S_PER_1000_LISTINGS + LATE_FUSION_S_PER_1000_LISTINGS
    return text_s + fusion_s + photo_s + fixed * listings / 1000


def plan_training(settings: Settings, train_listings: int, listings: int, photos: int) -> TrainingPlan | None:
    """Pick the richest tier whose estimate fits the budget and apply it to `settings`.

    Does nothing (returns None) when `settings.auto_plan` is off or the run is `--quick`:
    explicit configurations (tests, benchmarks) are left as they are. The smallest tier
    is used when none fits. Photo features are cached, so a rerun is faster than planned.
    """
    if not settings.auto_plan or settings.quick:
        return None
    budget = float(settings.time_budget_min)
    chosen, estimate = TIERS[-1], 0.0
    for tier in TIERS:
        estimate = estimate_seconds(tier, train_listings, listings, photos) / 60
        if estimate <= budget:
            chosen = tier
            break
    else:
        estimate = estimate_seconds(chosen, train_listings, listings, photos) / 60
    text, fusion, vision = settings.text, settings.fusion, settings.vision
    text.char_ngrams = chosen.char_ngrams
    text.frozen_epochs = chosen.text_frozen_epochs
    text.finetune_epochs = chosen.text_finetune_epochs
    fusion.epochs = chosen.fusion_epochs
    fusion.patience = chosen.fusion_patience
    vision.lite_variant = chosen.lite_variant
    vision.feature_size = chosen.feature_size
    note = (
        f"training tier {chosen.name!r} for {listings} listings ({train_listings} in training) and "
        f"{photos} photos: about {estimate:.0f} min on a 2-core CPU, budget {budget:g} min"
    )
    log.info(note)
    return TrainingPlan(chosen.name, round(estimate, 1), budget, train_listings, photos, note)
