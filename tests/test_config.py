"""Settings: the FBMARKET_* environment (pydantic-settings) and the settings.json round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fbmarket.config import Environment, Settings
from fbmarket.errors import DataError


def test_the_environment_fills_deployment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FBMARKET_API_KEY", "key-123")
    monkeypatch.setenv("FBMARKET_DATABASE_URL", "postgresql://u:pw-456@db/market")
    monkeypatch.setenv("FBMARKET_PORT", "9001")
    monkeypatch.setenv("FBMARKET_HOST", "")  # empty: as if unset
    settings = Settings().with_environment()
    assert settings.serve.api_key_value() == "key-123"
    assert settings.database_url == "postgresql://u:pw-456@db/market"
    assert settings.serve.port == 9001 and settings.serve.host == "127.0.0.1"
    shown = repr(settings.serve) + repr(Environment())
    assert "key-123" not in shown and "pw-456" not in shown  # secrets are SecretStr
    assert sorted(settings.secrets()) == ["key-123", "pw-456"]


def test_unset_variables_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("API_KEY", "DATABASE_URL", "HOST", "PORT", "LOG_LEVEL", "ACCESS_LOG", "FAISS_THREADS"):
        monkeypatch.delenv(f"FBMARKET_{name}", raising=False)
    settings = Settings(database_url="sqlite:////tmp/x.db")
    settings.serve.api_key = "from-a-flag"
    settings.with_environment()
    assert settings.database_url == "sqlite:////tmp/x.db" and settings.serve.api_key_value() == "from-a-flag"


def test_a_bad_variable_is_refused_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FBMARKET_PORT", "eighty")
    with pytest.raises(DataError, match="FBMARKET_PORT") as caught:
        Settings().with_environment()
    assert "eighty" not in str(caught.value)  # values are not repeated: one may be a secret


def test_settings_json_round_trips_and_ignores_unknown_keys(tmp_path: Path) -> None:
    settings = Settings(data_dir=Path("data/x"), seed=7)
    settings.data.split_fractions = (0.8, 0.1, 0.1)
    settings.rank.age_band_edges = (20, 40)
    settings.serve.api_key = "never-written"
    path = tmp_path / "settings.json"
    settings.save(path)
    assert "never-written" not in path.read_text()
    payload = json.loads(path.read_text())
    payload["from_a_newer_version"] = 1
    payload["search"]["new_knob"] = 2
    loaded = Settings.from_json(payload)
    assert loaded.data.split_fractions == (0.8, 0.1, 0.1) and loaded.rank.age_band_edges == (20, 40)
    assert loaded.data_dir == Path("data/x") and loaded.seed == 7 and loaded.serve.api_key is None
    settings.serve.api_key = None
    assert loaded == settings


def test_invalid_settings_are_refused() -> None:
    payload = Settings().to_json()
    payload["price"]["alphas"] = [0.9, 0.5, 0.1]
    with pytest.raises(ValueError, match="increasing"):
        Settings.from_json(payload)
