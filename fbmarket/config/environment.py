"""The settings a deployment gives through the environment (FBMARKET_*), never through files.

Secrets (the API key, a database URL with its password) must not live in settings.json, and a
container sets its server address the same way; `Environment` reads them, validated, with the
secrets as `SecretStr` (shown as ********** by repr and logs). `Settings.with_environment`
lays them over a run's settings. The variables:

    FBMARKET_DATABASE_URL   the database (a SQLAlchemy URL; overrides settings.json; --database wins)
    FBMARKET_API_KEY        the key POST/PUT/DELETE /listings need; writes are refused without one
    FBMARKET_INDEX_URI      where retrieval runs: unset = FAISS + BM25 in process; milvus://host:port
                            or a milvus-lite .db file (search/backend.py; --index-uri wins)
    FBMARKET_HOST, FBMARKET_PORT                  where `fbmarket serve` listens (its flags win)
    FBMARKET_LOG_LEVEL, FBMARKET_ACCESS_LOG, FBMARKET_FAISS_THREADS   the server's ServeSettings
    FBMARKET_BUNDLE         the bundle the app factory serves (`uvicorn --factory
                            fbmarket.api.app:app_from_environment`, where there are no flags)
"""

from __future__ import annotations

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from fbmarket.errors import DataError


class Environment(BaseSettings):
    """FBMARKET_* variables; None where a variable is unset (or empty), so files and defaults stay."""

    model_config = SettingsConfigDict(env_prefix="FBMARKET_", extra="ignore", env_ignore_empty=True)

    database_url: SecretStr | None = None
    api_key: SecretStr | None = None
    index_uri: SecretStr | None = None  # may hold a Milvus user's password
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    log_level: str | None = None
    access_log: bool | None = None
    faiss_threads: int | None = None
    bundle: str | None = None  # read by the app factory only (api/app.py); `serve` takes --bundle

    def serve_overrides(self) -> dict[str, object]:
        """The ServeSettings fields this environment sets."""
        fields = ("api_key", "host", "port", "log_level", "access_log", "faiss_threads")
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}


def read_environment() -> Environment:
    """The FBMARKET_* environment, validated.

    Raises DataError naming each variable that does not parse (FBMARKET_PORT=abc), so the
    command line prints one line and the server does not start; the value is not repeated,
    since a variable next to the secrets may hold one.
    """
    try:
        return Environment()
    except ValidationError as error:
        problems = [
            f"FBMARKET_{'_'.join(str(part) for part in problem['loc']).upper()}: {problem['msg']}"
            for problem in error.errors()
        ]
        raise DataError("invalid environment variable(s): " + "; ".join(problems)) from None
