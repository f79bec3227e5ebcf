"""The one settings object.

Every tunable number lives here, grouped by the stage that reads it (the sections, in
sections.py). `main.py` and the CLI build a `Settings` from their flags; library code receives
it (or one of its sections) as an argument and never reads flags or environment variables
itself, so a run is reproducible from its saved `settings.json`. What a deployment gives
through the environment (FBMARKET_*: the database URL, the API key, the server's address) is
read in one place, environment.py, and laid over by `with_environment`; it is never saved.

The training sections stay dataclasses rather than pydantic models: they are the bundle's
settings.json, and pydantic validates them as they are (`from_json`) without changing a byte
of that file.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from fbmarket.config.environment import Environment, read_environment
from fbmarket.config.secrets import (
    MASK,
    install_log_redaction,
    mask_secrets_in_text,
    mask_url_password,
    url_password,
    url_password_masked,
    url_secrets,
)
from fbmarket.config.sections import (
    DataSettings,
    DuplicateSettings,
    FusionSettings,
    PriceSettings,
    RankSettings,
    SearchSettings,
    ServeSettings,
    TextSettings,
    VisionSettings,
)
from fbmarket.files import atomic_write_text, dumps_json

__all__ = [
    "MASK",
    "DataSettings",
    "DuplicateSettings",
    "Environment",
    "read_environment",
    "FusionSettings",
    "PriceSettings",
    "RankSettings",
    "SearchSettings",
    "ServeSettings",
    "Settings",
    "TextSettings",
    "VisionSettings",
    "install_log_redaction",
    "mask_secrets_in_text",
    "mask_url_password",
    "url_password",
    "url_password_masked",
    "url_secrets",
]


@dataclass
class Settings:
    """Everything a run needs. `data_dir=None` means the embedded synthetic marketplace."""

    data_dir: Path | None = None
    out_dir: Path = Path("artifacts")
    database_url: str | None = None  # default: SQLite file inside out_dir
    # where retrieval runs (search/backend.py): None = FAISS + BM25 in process (the default);
    # "milvus://host:port" a Milvus server; a path ending .db (or milvus-lite:///abs.db) milvus-lite
    index_uri: str | None = None
    seed: int = 42
    quick: bool = False
    # Training picks its configuration from the data's size to fit this many minutes of a
    # 2-core CPU (fbmarket/plan.py); auto_plan False keeps the sections exactly as set.
    time_budget_min: float = 30.0
    auto_plan: bool = True
    data: DataSettings = field(default_factory=DataSettings)
    text: TextSettings = field(default_factory=TextSettings)
    vision: VisionSettings = field(default_factory=VisionSettings)
    fusion: FusionSettings = field(default_factory=FusionSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    rank: RankSettings = field(default_factory=RankSettings)
    price: PriceSettings = field(default_factory=PriceSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    duplicates: DuplicateSettings = field(default_factory=DuplicateSettings)

    # Paths derived from out_dir, so every stage agrees on where things live.
    @property
    def db_url(self) -> str:
        """The database to use. A URL read back from settings.json has its password masked
        (`to_json`): then the real one must come from --database or FBMARKET_DATABASE_URL."""
        if self.database_url and url_password_masked(self.database_url):
            raise ValueError(
                f"the database URL {self.database_url} has its password masked (settings.json never "
                "holds secrets): give the full URL with --database or FBMARKET_DATABASE_URL"
            )
        return self.database_url or f"sqlite:///{(self.out_dir / 'fbmarket.db').resolve()}"

    @property
    def cache_dir(self) -> Path:
        return self.out_dir / "cache"

    @property
    def reports_dir(self) -> Path:
        return self.out_dir / "reports"

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON for settings.json and reports, without secrets: no API key, and
        database URLs (`database_url`, a `data_dir` URL) with the password masked as ***, so a
        bundle can be copied or published. A run reads its password from --database or
        FBMARKET_DATABASE_URL again (`db_url` says so when it is missing)."""
        # warnings off: `data_dir` may hold a database URL (a str) where its type says Path
        payload: dict[str, Any] = _adapter().dump_python(self, mode="json", warnings=False)
        # secrets never go to disk: no API key, database URLs with their password masked
        payload["serve"]["api_key"] = None
        for key in ("database_url", "data_dir", "index_uri"):
            if isinstance(payload.get(key), str):
                payload[key] = mask_url_password(payload[key])
        return payload

    def secrets(self) -> list[str]:
        """The secret strings this run holds (API key, database passwords): for redacting
        messages that may quote them (e.g. an error shown on /ready)."""
        key = self.serve.api_key_value()
        found = [key] if key else []
        for url in (self.database_url, self.data_dir, self.index_uri):
            if isinstance(url, str):
                found += url_secrets(url)  # userinfo password and credential query values, both forms
        return [secret for secret in found if secret != MASK]

    def redact(self, text: str) -> str:
        """`text` with every secret of this run replaced by ***, and any URL credential in it
        masked too (a library may quote a URL this run does not hold)."""
        for secret in sorted(self.secrets(), key=len, reverse=True):  # longest first: no partial mask
            text = text.replace(secret, MASK)
        return mask_secrets_in_text(text)

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), dumps_json(self.to_json(), indent=2))

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Settings:
        """Settings from their JSON, validated by pydantic against the dataclasses' types (lists
        back to tuples, strings to paths). Keys this version does not know (a newer version
        wrote them) are ignored; missing ones take their defaults."""
        return _adapter().validate_python(payload)

    @classmethod
    def load(cls, path: Path) -> Settings:
        return cls.from_json(json.loads(path.read_text()))

    def with_environment(self) -> Settings:
        """Lay the FBMARKET_* environment over these settings (secrets and deployment settings
        that must not live in files; see environment.py). Unset variables change nothing."""
        environment = read_environment()
        if environment.database_url is not None:
            self.database_url = environment.database_url.get_secret_value()
        if environment.index_uri is not None:
            self.index_uri = environment.index_uri.get_secret_value()
        for name, value in environment.serve_overrides().items():
            setattr(self.serve, name, value)
        return self

    def apply_quick(self) -> Settings:
        """Shrink every stage for a fast end-to-end run (tests, `--quick`)."""
        self.quick = True
        self.data.sample_products = min(self.data.sample_products, 300)
        self.data.image_size = min(self.data.image_size, 64)
        self.text.w2v_dim = min(self.text.w2v_dim, 32)
        self.text.w2v_epochs = min(self.text.w2v_epochs, 5)
        self.text.max_tokens = min(self.text.max_tokens, 48)
        self.vision.train_size = min(self.vision.train_size, 48)
        # the smaller packaged backbone at the photo cache's size: seconds, not minutes
        if self.vision.lite_variant == "efficientnet_lite2":
            self.vision.lite_variant = "efficientnet_lite0"
        if self.vision.feature_size == 0:
            self.vision.feature_size = self.data.image_size
        self.fusion.embedding_dim = min(self.fusion.embedding_dim, 64)
        self.fusion.epochs = min(self.fusion.epochs, 2)
        self.rank.n_buyers = min(self.rank.n_buyers, 60)
        self.price.num_boost_round = min(self.price.num_boost_round, 100)
        self.price.free_rounds = min(self.price.free_rounds, 50)
        return self


@functools.cache
def _adapter() -> TypeAdapter[Settings]:
    """pydantic's reader and writer of `Settings` (built once: it compiles a schema)."""
    return TypeAdapter(Settings)
