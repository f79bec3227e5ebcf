"""The training tier follows the data's size and the time budget."""

from __future__ import annotations

from fbmarket.config import Settings
from fbmarket.plan import RUN_BUDGET_MIN, TIERS, estimate_seconds, plan_training


def test_dev_sized_data_gets_the_full_tier_within_the_default_budget() -> None:
    settings = Settings()
    plan = plan_training(settings, train_listings=3707, listings=5297, photos=9312)
    assert plan is not None and plan.tier == "full" and plan.estimated_min <= 30
    assert settings.vision.lite_variant == "efficientnet_lite2" and settings.vision.feature_size == 0
    assert settings.text.char_ngrams == 5 and settings.fusion.epochs == 12


def test_the_synthetic_demo_budget_gets_the_small_tier() -> None:
    settings = Settings()
    settings.time_budget_min = RUN_BUDGET_MIN
    plan = plan_training(settings, train_listings=1400, listings=2000, photos=3900)
    assert plan is not None and plan.tier == "small"
    assert settings.vision.lite_variant == "efficientnet_lite0" and settings.vision.feature_size == 160
    assert settings.text.char_ngrams == 0


def test_larger_data_steps_down_and_estimates_grow_with_size() -> None:
    settings = Settings()
    plan = plan_training(settings, train_listings=14_000, listings=20_000, photos=36_000)
    assert plan is not None and plan.tier != "full"
    full = TIERS[0]
    assert estimate_seconds(full, 2000, 3000, 5000) < estimate_seconds(full, 4000, 6000, 10000)


def test_quick_runs_and_explicit_configurations_are_left_alone() -> None:
    quick = Settings().apply_quick()
    assert plan_training(quick, 3707, 5297, 9312) is None
    explicit = Settings()
    explicit.auto_plan = False
    explicit.fusion.epochs = 3
    assert plan_training(explicit, 3707, 5297, 9312) is None and explicit.fusion.epochs == 3
