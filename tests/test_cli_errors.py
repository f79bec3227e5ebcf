"""How the CLI reports errors: a user's mistake (FbmarketError) on one line, a bug (ValueError,
KeyError) on one line naming the exception, with its traceback only under --verbose."""

from __future__ import annotations

import argparse

import pytest

import fbmarket.cli as cli
from fbmarket.errors import BadRequestError, NotFoundError


def run_with(monkeypatch: pytest.MonkeyPatch, error: Exception, *flags: str) -> int:
    def handler(_args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(cli, "cmd_sample", handler)  # build_parser reads it when main() runs
    return cli.main([*flags, "sample", "--out", "unused"])


@pytest.mark.parametrize("error", [BadRequestError("k must be a whole number"), NotFoundError("listing 'x' not found")])
def test_a_users_mistake_is_one_line(monkeypatch, capsys, error) -> None:
    assert run_with(monkeypatch, error) == 2
    err = capsys.readouterr().err
    assert err == f"fbmarket sample: error: {error.message}\n"


def test_a_bug_names_the_exception_and_shows_its_traceback_only_when_verbose(monkeypatch, capsys) -> None:
    assert run_with(monkeypatch, ValueError("columns do not line up")) == 2
    err = capsys.readouterr().err
    assert "ValueError: columns do not line up" in err and "--verbose" in err and "Traceback" not in err
    assert run_with(monkeypatch, KeyError("title"), "--verbose") == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: title" in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["serve", "--bundle", "{tmp}"], "not a model bundle"),
        (["prepare", "--data", "postgresql+psycopg://nobody@127.0.0.1:1/x", "--out", "{tmp}/o"], "cannot connect"),
    ],
)
def test_an_unusable_bundle_or_database_is_one_line(tmp_path, capsys, argv, says) -> None:
    """Before, these were a server stuck answering 503 and two SQLAlchemy tracebacks."""
    (tmp_path / "Products.csv").write_text("id,product_name,category,product_price,location\n")
    (tmp_path / "Images.csv").write_text("id,product_id\n")
    assert cli.main([part.replace("{tmp}", str(tmp_path)) for part in argv]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_database_url_that_does_not_parse_is_the_users_to_fix() -> None:
    from fbmarket.data.engine import create_engine
    from fbmarket.errors import DataError

    with pytest.raises(DataError, match="database URL notaurl cannot be used"):
        create_engine("notaurl")
    with pytest.raises(DataError) as caught:
        create_engine("nodriver://user:secret@host/db")
    assert "secret" not in str(caught.value)  # the password is masked


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["-k", "0"], "-k: '0': must be from 1 to 100"),
        (["-k", "2.5"], "not a whole number"),
        (["--lat", "nan", "--lon", "0"], "--lat: 'nan'"),
        (["--lat", "91", "--lon", "0"], "from -90 to 90"),
        (["--lon", "-1.5"], "--lat and --lon must be given together"),
        (["--min-price", "5", "--max-price", "2"], "--max-price must not be below --min-price"),
        (["--max-price", "inf"], "--max-price: 'inf'"),
        (["--max-distance-km", "0"], "above 0 and at most 2000"),
    ],
)
def test_search_flags_are_checked_before_the_bundle_is_opened(tmp_path, capsys, flags, says) -> None:
    """The bundle does not exist: each flag's mistake must be the one reported, in one line."""
    try:  # argparse exits 2 on a flag's own mistake; main() returns 2 on a combination's
        code = cli.main(["search", "--bundle", str(tmp_path / "no-bundle"), "sofa", *flags])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and "no-bundle" not in err, err


def test_a_sqlite_database_in_a_missing_folder_is_refused_without_making_it(tmp_path) -> None:
    """Serving or searching with a mistyped --database used to create the folder and an empty
    database; only training (a new bundle) creates a folder."""
    from fbmarket.data.store import Store
    from fbmarket.errors import DataError

    with pytest.raises(DataError, match="missing does not exist"):
        Store(f"sqlite:///{tmp_path}/missing/x.db")
    assert not (tmp_path / "missing").exists()
    Store(f"sqlite:///{tmp_path}/new/x.db", create_folder=True).close()
    assert (tmp_path / "new" / "x.db").is_file()
