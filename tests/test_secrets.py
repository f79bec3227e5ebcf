"""No credential is ever written to disk or printed (issue 14, kind 12).

settings.json used to blank the API key but keep `database_url` whole, password and all
(compose.yaml passes one). The settings writer is tested directly, /ready on a failed
load over a real server, and a real `fbmarket run` with a password-carrying database URL
(a SQLite stand-in, tests/password_sqlite.py) is checked byte by byte: every file it
wrote, its TensorBoard logs and its output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
from api_fixtures import run_server

from fbmarket.config import Settings, mask_url_password, url_password

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
PASSWORD = "S3cret-Pa55word-14"
POSTGRES = f"postgresql+psycopg://fbmarket:{PASSWORD}@db:5432/fbmarket"


def test_settings_json_masks_database_passwords_and_drops_the_api_key(tmp_path: Path) -> None:
    settings = Settings(database_url=POSTGRES, data_dir=f"postgresql://reader:{PASSWORD}@warehouse/listings")
    settings.serve.api_key = "key-" + PASSWORD
    path = tmp_path / "settings.json"
    settings.save(path)
    text = path.read_text()
    assert PASSWORD not in text
    saved = json.loads(text)
    assert saved["database_url"] == "postgresql+psycopg://fbmarket:***@db:5432/fbmarket"
    assert saved["data_dir"] == "postgresql://reader:***@warehouse/listings"
    assert saved["serve"]["api_key"] is None
    assert settings.database_url == POSTGRES, "the running settings keep the real URL"

    # read back, the masked URL is refused with what to do, not tried against the server
    loaded = Settings.load(path)
    with pytest.raises(ValueError, match="--database or FBMARKET_DATABASE_URL"):
        _ = loaded.db_url
    os.environ["FBMARKET_DATABASE_URL"] = POSTGRES
    try:
        assert Settings.load(path).with_environment().db_url == POSTGRES
    finally:
        del os.environ["FBMARKET_DATABASE_URL"]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (POSTGRES, "postgresql+psycopg://fbmarket:***@db:5432/fbmarket"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        ("sqlite:////tmp/fbmarket.db", "sqlite:////tmp/fbmarket.db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("/data/gumtree", "/data/gumtree"),
    ],
)
def test_mask_url_password(url: str, masked: str) -> None:
    assert mask_url_password(url) == masked
    assert url_password(masked) in (None, "***")


def test_redact_covers_plain_and_percent_encoded_passwords() -> None:
    settings = Settings(database_url="postgresql://u:p%40ss@h/db")
    settings.serve.api_key = "the-key"
    assert settings.redact("failed: postgresql://u:p%40ss@h/db (p@ss) the-key") == (
        "failed: postgresql://u:***@h/db (***) ***"
    )


def test_ready_never_shows_the_password_of_a_failed_load() -> None:
    from fbmarket.api.app import create_app

    settings = Settings(database_url=POSTGRES)

    def failing_loader():
        raise RuntimeError(f"could not connect to {POSTGRES}")

    app = create_app(settings=settings, loader=failing_loader)
    with run_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(100):
            ready = client.get("/ready")
            if "failed to load" in ready.text:
                break
        assert ready.status_code == 503 and "failed to load" in ready.text
        assert PASSWORD not in ready.text and "fbmarket:***@db" in ready.text


def fbmarket_with_password_dialect(*args: str) -> subprocess.CompletedProcess:
    """The real CLI, with the "sqlitepw" dialect registered so a SQLite URL can hold a password."""
    code = "import sys, password_sqlite; from fbmarket.cli import main; sys.exit(main(sys.argv[1:]))"
    env = os.environ | {
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("FBMARKET_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
    )


def files_holding(folder: Path, secret: bytes) -> list[str]:
    return [str(p) for p in sorted(folder.rglob("*")) if p.is_file() and secret in p.read_bytes()]


@pytest.mark.slow
def test_a_run_with_a_password_url_writes_and_prints_no_password(tmp_path: Path) -> None:
    from fbmarket.synthetic.marketplace import write_sample

    data = tmp_path / "data"
    write_sample(data, n_products=60, seed=14, show_progress=False)
    out = tmp_path / "bundle"
    url = f"sqlitepw://fbmarket:{PASSWORD}@/{tmp_path / 'market.db'}"
    run = fbmarket_with_password_dialect(
        "run", "--quick", "--quiet", "--data", str(data), "--out", str(out), "--database", url
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert (tmp_path / "market.db").is_file(), "the run used the password URL's database"
    secret = PASSWORD.encode()
    assert files_holding(out, secret) == []
    log_dir = Path(json.loads((out / "bundle.json").read_text())["log_dir"])
    log_dir = log_dir if log_dir.is_absolute() else ROOT / log_dir
    assert log_dir.is_dir() and files_holding(log_dir, secret) == []
    assert PASSWORD not in run.stdout + run.stderr
    assert json.loads((out / "settings.json").read_text())["database_url"] == url.replace(PASSWORD, "***")

    # the bundle alone cannot reach the database: a clear message, not a login attempt with ***
    alone = fbmarket_with_password_dialect("search", "--bundle", str(out), "sofa")
    assert alone.returncode == 2 and "--database or FBMARKET_DATABASE_URL" in alone.stderr
    title = (
        pd.read_csv(data / "Products.csv", lineterminator="\n", dtype=str)["product_name"].dropna().iloc[0]
    )
    query = title.split("|")[0].strip()  # a listing's own title: surely found
    found = fbmarket_with_password_dialect("search", "--bundle", str(out), query, "--database", url, "--json")
    assert found.returncode == 0 and json.loads(found.stdout), found.stderr[-3000:]
    for completed in (alone, found):
        assert PASSWORD not in completed.stdout + completed.stderr
    assert files_holding(out, secret) == []
