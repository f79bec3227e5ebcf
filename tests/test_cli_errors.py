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
