"""How the CLI reports errors: a user's mistake (FbmarketError) on one line, a bug (ValueError,
KeyError) on one line naming the exception, with its traceback only under --verbose."""

from __future__ import annotations

import argparse
from pathlib import Path

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


@pytest.mark.parametrize(
    "argv",
    [["search", "sofa"], ["price", "--title", "sofa"], ["duplicates"], ["index"]],
)
def test_without_bundle_the_commands_read_train_s_default_folder(tmp_path, monkeypatch, capsys, argv) -> None:
    """`fbmarket train` writes artifacts/ without --out; the commands that read a bundle look
    there without --bundle (before, --bundle was required)."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'artifacts'} is not a model bundle" in err and "Traceback" not in err


def test_evaluate_defaults_to_train_s_folder_and_needs_no_report() -> None:
    args = cli.build_parser().parse_args(["evaluate", "--data", "d"])
    assert args.bundle == Path("artifacts") and args.report is None
    for command in ("embed", "serve"):
        assert cli.build_parser().parse_args([command]).bundle == Path("artifacts")


def test_a_database_url_that_does_not_parse_is_the_users_to_fix() -> None:
    from fbmarket.data.engine import create_engine
    from fbmarket.errors import DataError

    with pytest.raises(DataError, match="database URL notaurl cannot be used"):
        create_engine("notaurl")
    with pytest.raises(DataError) as caught:
        create_engine("nodriver://user:secret@host/db")
    assert "secret" not in str(caught.value)  # the password is masked


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://u:p4ss@127.0.0.1:1/db?sslpassword=S3cr&token=T0k",  # an option psycopg refuses
        "postgresql+psycopg://u:p4ss@127.0.0.1:1/db?sslmode=sometimes",  # a value it refuses
    ],
)
def test_a_connection_option_the_driver_refuses_is_the_users_to_fix(url: str) -> None:
    """psycopg refuses these at connect with a ProgrammingError, which was a 118-line traceback
    from `fbmarket prepare --database URL`; now the one-line DataError, secrets masked."""
    from fbmarket.data.migrations import migrate
    from fbmarket.errors import DataError

    with pytest.raises(DataError, match="cannot connect to the database") as caught:
        migrate(url)
    assert not any(secret in str(caught.value) for secret in ("p4ss", "S3cr", "T0k"))


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


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["search", "--bundle", "{tmp}/b", "sofa", "--k", "0"], "argument -k/--k: '0': must be from 1 to 100"),
        (["search", "--bundle", "{tmp}/b", "sofa", "-k", "-3"], "'-3': must be from 1 to 100"),
        (["train", "--time-budget", "0"], "argument --time-budget: '0': must be above 0"),
        (["train", "--time-budget", "-5"], "argument --time-budget: '-5': must be above 0"),
        (["run", "--time-budget", "nan"], "argument --time-budget: 'nan'"),
        (["train", "--seed", "-1"], "argument --seed: '-1': must be from 0 to 4294967295"),
        (["prepare", "--seed", "2.5"], "argument --seed: '2.5' is not a whole number"),
        (["sample", "--out", "{tmp}/s", "--products", "3"], "argument --products: '3': must be at least 40"),
        (["sample", "--out", "{tmp}/s", "--seed", "-7"], "argument --seed: '-7'"),
        (["embed", "--bundle", "{tmp}/b", "--batch-size", "0"], "argument --batch-size: '0': must be at least 1"),
        (["embed", "--bundle", "{tmp}/b", "--workers", "0"], "argument --workers: '0': must be at least 1"),
        (["duplicates", "--bundle", "{tmp}/b", "--limit", "-1"], "argument --limit: '-1': must be at least 0"),
        (["serve", "--bundle", "{tmp}/b", "--port", "0"], "argument --port: '0': must be from 1 to 65535"),
        (["serve", "--bundle", "{tmp}/b", "--port", "70000"], "must be from 1 to 65535"),
    ],
)
def test_numeric_flags_out_of_range_are_refused_by_the_parser(tmp_path, capsys, argv, says) -> None:
    """Before, `--k 0` was not a flag, `--time-budget 0`/`-5`, `--batch-size 0`, `--workers 0`,
    a negative seed or `--port 0` (silently the default) were accepted and failed later, with a
    traceback or nonsense. Nothing exists at these paths: the flag must be what is reported."""
    with pytest.raises(SystemExit) as exit_:
        cli.main([part.replace("{tmp}", str(tmp_path)) for part in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith(f"fbmarket {argv[0]}: error: argument")


def test_every_numeric_flag_has_a_range() -> None:
    """A new int/float flag must come with its range (`bounded`), not a bare `type=int`."""
    parser = cli.build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bare = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, command in subcommands.choices.items()
        for action in command._actions
        if action.type in (int, float)
    ]
    assert not bare, bare


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["train", "--out", "/proc/fbmarket-bundle"], "argument --out: cannot write there"),
        (["run", "--out", "{file}"], "argument --out: cannot write there: {file} exists and is not a folder"),
        (["prepare", "--out", "{file}/sub"], "argument --out: cannot write there: {file} is not a folder"),
        (["sample", "--out", "{file}"], "argument --out: cannot write there"),
        (["embed", "--bundle", "{tmp}/b", "--out", "{file}"], "argument --out: cannot write there"),
        (
            ["evaluate", "--bundle", "{tmp}/b", "--data", "{tmp}/d", "--report", "{tmp}/missing/r.json"],
            "argument --report: cannot write there: folder {tmp}/missing does not exist",
        ),
        (
            ["evaluate", "--bundle", "{tmp}/b", "--data", "{tmp}/d", "--report", "/proc/r.json"],
            "argument --report: cannot write there: cannot create files in /proc",
        ),
        (
            ["evaluate", "--bundle", "{tmp}/b", "--data", "{tmp}/d", "--report", "{tmp}"],
            "argument --report: cannot write there: {tmp} is a folder, not a file",
        ),
    ],
)
def test_output_paths_that_cannot_be_written_are_refused_before_any_work(tmp_path, capsys, argv, says) -> None:
    """Before, a bundle folder that could not be written failed after the whole training run
    (and a --report in a missing folder after the evaluation), with a traceback."""
    file = tmp_path / "a-file"
    file.write_text("not a folder")

    def fill(text: str) -> str:
        return text.replace("{file}", str(file)).replace("{tmp}", str(tmp_path))

    with pytest.raises(SystemExit) as exit_:
        cli.main([fill(part) for part in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert fill(says) in err and "Traceback" not in err, err
    assert file.read_text() == "not a folder" and not (tmp_path / "missing").exists()


def test_a_default_output_folder_that_cannot_be_written_is_refused_before_training(monkeypatch, capsys) -> None:
    """`fbmarket train` with no --out writes artifacts/ in the working directory."""
    monkeypatch.chdir("/proc")
    assert cli.main(["train", "--quick", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fbmarket train: error: --out: cannot write there: cannot create files in /proc")
    assert len(err.strip().splitlines()) == 1


def test_an_os_error_is_one_line_and_its_traceback_only_when_verbose(monkeypatch, capsys) -> None:
    """A disk that fills up or a folder without permission mid-command used to be a traceback."""
    error = PermissionError(13, "Permission denied", "/srv/bundle/model/fusion.keras")
    assert run_with(monkeypatch, error) == 2
    assert capsys.readouterr().err == (
        "fbmarket sample: error: /srv/bundle/model/fusion.keras: Permission denied\n"
    )
    assert run_with(monkeypatch, OSError(28, "No space left on device"), "--verbose") == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("fbmarket sample: error: [Errno 28] No space left on device\n")


HEADER_ONLY = ",id,product_name,category,product_description,price,location\n"
IMAGES_HEADER = ",id,product_id,image_ref,create_time\n"


@pytest.mark.parametrize("command", ["prepare", "train", "evaluate"])
def test_a_products_file_with_only_a_header_says_it_has_no_rows(tmp_path, capsys, command) -> None:
    """Before: "no listing survived cleaning: {}" from prepare/train, and a report of 0
    listings from index; the file itself is what is wrong."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "Products.csv").write_text(HEADER_ONLY + "\n\n")  # blank lines are not rows
    (data / "Images.csv").write_text(IMAGES_HEADER)
    flags = {
        "prepare": ["--out", str(tmp_path / "out")],
        "train": ["--out", str(tmp_path / "out"), "--quick"],
        "evaluate": ["--bundle", str(tmp_path / "b"), "--report", str(tmp_path / "r.json")],
    }[command]
    assert cli.main([command, "--data", str(data), "--quiet", *flags]) == 2
    err = capsys.readouterr().err
    assert f"{data / 'Products.csv'} has no rows" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_training_without_any_photo_is_refused_before_the_models(tmp_path, capsys) -> None:
    """An Images.csv with only a header: prepare is fine (listings may have no photo), but the
    image model cannot be trained on nothing."""
    data = tmp_path / "data"
    data.mkdir()
    rows = [
        f'{i},p{i},"Item {i} | in Leeds, West Yorkshire | Gumtree",{("Appliances / Kettles", "Home & Garden / Sofas")[i % 2]},'
        f'Thing number {i},£{i + 5}.00,"Leeds, West Yorkshire"'
        for i in range(8)
    ]
    (data / "Products.csv").write_text(HEADER_ONLY + "\n".join(rows) + "\n")
    (data / "Images.csv").write_text(IMAGES_HEADER)
    assert cli.main(["train", "--data", str(data), "--out", str(tmp_path / "out"), "--quick", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no photo to train the image model on" in err and "Images.csv has no rows" in err, err
    assert not (tmp_path / "out" / "bundle.json").exists()


def test_serve_without_a_bundle_names_the_folder_and_the_command_that_makes_one(tmp_path, capsys, monkeypatch) -> None:
    """The message gave the path as typed (relative to a cwd the reader may not know)."""
    monkeypatch.chdir(tmp_path)
    code = cli.main(["serve", "--bundle", "no-bundle"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert f"{tmp_path / 'no-bundle'} does not exist" in err and "`fbmarket train`" in err, err
