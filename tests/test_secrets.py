"""No credential is ever written to disk or printed (issue 14, kind 12).

settings.json used to blank the API key but keep `database_url` whole, password and all
(compose.yaml passes one). The settings writer is tested directly, /ready on a failed
load over a real server, and a real `fbmarket run` with a password-carrying database URL
(a SQLite stand-in, tests/password_sqlite.py) is checked byte by byte: every file it
wrote, its TensorBoard logs and its output.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
from api_fixtures import run_server

from fbmarket.config import (
    Settings,
    install_log_redaction,
    mask_secrets_in_text,
    mask_url_password,
    url_password,
    url_password_masked,
)

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
        # credentials in query parameters (libpq's password / sslpassword, tokens, API keys)
        ("postgresql://bob:Sup3rS3cret@127.0.0.1:1/db?password=W0rdInQuery",
         "postgresql://bob:***@127.0.0.1:1/db?password=***"),
        ("postgresql://h/db?user=bob&password=pw1&sslmode=require", "postgresql://h/db?user=bob&password=***&sslmode=require"),
        ("postgresql://h/db?sslmode=require&sslpassword=k%40y", "postgresql://h/db?sslmode=require&sslpassword=***"),
        ("mysql://h/db?passwd=a&pwd=b&PASS=c", "mysql://h/db?passwd=***&pwd=***&PASS=***"),
        ("milvus://h:19530?token=root:Milvus&collection=c", "milvus://h:19530?token=***&collection=c"),
        ("https://h/x?api_key=k1&apikey=k2&access_token=t&client_secret=s&secret=z",
         "https://h/x?api_key=***&apikey=***&access_token=***&client_secret=***&secret=***"),
        ("sqlite:////tmp/a.db?mode=ro&uri=true", "sqlite:////tmp/a.db?mode=ro&uri=true"),
    ],
)  # fmt: skip
def test_mask_url_password(url: str, masked: str) -> None:
    assert mask_url_password(url) == masked
    assert url_password(masked) in (None, "***")


QUERY_URL = "postgresql://bob:Sup3rS3cret@127.0.0.1:1/db?password=W0rdInQuery&sslpassword=Ss1%21pw"


def test_settings_json_and_redact_mask_query_credentials(tmp_path: Path) -> None:
    settings = Settings(database_url=QUERY_URL, index_uri="milvus://admin:milvpw@127.0.0.1:1?token=T0ken")
    path = tmp_path / "settings.json"
    settings.save(path)
    text = path.read_text()
    for secret in ("Sup3rS3cret", "W0rdInQuery", "Ss1%21pw", "Ss1!pw", "milvpw", "T0ken"):
        assert secret not in text and secret not in json.dumps(settings.to_json())
        assert secret not in settings.redact(f"failed: {QUERY_URL} (Ss1!pw) milvus://admin:milvpw@127.0.0.1:1?token=T0ken")
    assert json.loads(text)["database_url"] == "postgresql://bob:***@127.0.0.1:1/db?password=***&sslpassword=***"
    with pytest.raises(ValueError, match="--database or FBMARKET_DATABASE_URL"):
        _ = Settings.load(path).db_url  # read back, the masked URL is not tried against a server
    assert url_password_masked("postgresql://h/db?password=***")


def test_free_text_masks_urls_a_library_quotes() -> None:
    line = "Failed to create new connection using: http://admin:milvpw@127.0.0.1:1, then h://x?pwd=zz ok"
    assert mask_secrets_in_text(line) == (
        "Failed to create new connection using: http://admin:***@127.0.0.1:1, then h://x?pwd=*** ok"
    )
    assert mask_secrets_in_text("no url: a=b, 3 @ 4") == "no url: a=b, 3 @ 4"


def test_third_party_log_records_never_carry_a_url_credential(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent
    logger = logging.getLogger("some.library")
    with caplog.at_level(logging.INFO):
        logger.error("Failed to create new connection using: %s", "http://admin:milvpw@127.0.0.1:1")
        logger.warning("retrying %s", "postgresql://h/db?password=W0rdInQuery")
        try:
            raise ConnectionError("cannot reach http://admin:milvpw@127.0.0.1:1")
        except ConnectionError:
            logger.exception("connect failed")
    text = caplog.text + "".join(record.exc_text or "" for record in caplog.records)
    assert "milvpw" not in text and "W0rdInQuery" not in text
    assert "http://admin:***@127.0.0.1:1" in caplog.text


def test_pymilvus_connection_failure_prints_no_password() -> None:
    """pymilvus configures its loggers with their own stderr handler: the real library, stderr captured."""
    code = (
        "from fbmarket.config import install_log_redaction; install_log_redaction()\n"
        "from pymilvus import MilvusClient\n"
        "try:\n    MilvusClient(uri='http://admin:milvpw@127.0.0.1:1', timeout=2)\n"
        "except Exception as error:\n    print('raised', type(error).__name__)\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "raised" in done.stdout, done.stderr[-2000:]
    assert "milvpw" not in done.stdout + done.stderr
    assert "admin:***@127.0.0.1:1" in done.stderr, "the library's line is kept, masked"


def test_cli_error_line_masks_a_query_password(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame(
        {
            "id": [f"p{i}" for i in range(5)],
            "product_name": [f"Oak table {i} | in Leeds, West Yorkshire | Gumtree" for i in range(5)],
            "category": ["Home & Garden / Furniture / Tables"] * 5,
            "product_description": ["Solid oak."] * 5,
            "price": ["£40.00"] * 5,
            "location": ["Leeds, West Yorkshire"] * 5,
        }
    ).to_csv(data / "Products.csv")
    pd.DataFrame({"id": ["i0"], "product_id": ["p0"], "image_ref": ["i0"]}).to_csv(data / "Images.csv")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("FBMARKET_DATABASE_URL", None)
    url = "postgresql://bob:Sup3rS3cret@127.0.0.1:1/db?password=W0rdInQuery"
    done = subprocess.run(
        [sys.executable, "-m", "fbmarket.cli", "prepare", "--data", str(data), "--out", str(tmp_path / "x"),
         "--database", url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Sup3rS3cret" not in done.stdout + done.stderr and "W0rdInQuery" not in done.stdout + done.stderr
    assert "password=***" in done.stderr
    if (tmp_path / "x").exists():
        assert files_holding(tmp_path / "x", b"W0rdInQuery") == []


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
