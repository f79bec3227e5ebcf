"""`fbmarket embed`: the batch job's engines agree with `encode_listings`, its files have the
documented schema, the database holds the embeddings afterwards, and bad inputs are messages.

On the tiny trained bundle the API tests use (tests/api_fixtures.py); the Ray test runs Ray's
local mode with one actor (its start-up, about a minute on the busy 2-core machine, is most of
the test's time; a second actor added 25 s there), in a separate process as on a cluster.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from api_fixtures import copy_bundle

from fbmarket.batch import EMBEDDING_SCHEMA, run_embed
from fbmarket.batch.embed import parquet_files
from fbmarket.data import schema as S
from fbmarket.data.store import Store
from fbmarket.data.tables import embeddings
from fbmarket.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def _database(bundle: Path) -> str:
    return f"sqlite:///{bundle / 'fbmarket.db'}"


def _read(directory: Path) -> pd.DataFrame:
    frame = pq.read_table(directory).to_pandas()
    return frame.sort_values("product_id").reset_index(drop=True)


def _matrix(column: pd.Series) -> np.ndarray:
    return np.stack([np.asarray(v, np.float32) for v in column])


@pytest.fixture(scope="module")
def bundle(api_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny bundle whose database holds no embedding (as after `prepare`)."""
    copy = copy_bundle(api_bundle, tmp_path_factory.mktemp("embed") / "bundle")
    engine = sa.create_engine(_database(copy))
    with engine.begin() as connection:
        connection.execute(sa.delete(embeddings))
    engine.dispose()
    return copy


@pytest.fixture(scope="module")
def expected(bundle: Path) -> pd.DataFrame:
    """`Bundle.encode_listings` over the whole catalogue at once: what every engine must give."""
    from fbmarket.bundle import Bundle

    store = Store(_database(bundle), root=bundle)
    products, photos = store.listings_frame(), store.images_frame()
    store.close()
    encoded = Bundle.load(bundle, lazy=True).encode_listings(products, photos, use_cache=False)
    return pd.DataFrame(
        {
            "product_id": products[S.PRODUCT_ID].astype(str),
            "embedding": list(encoded.embeddings),
            "photo_vector": list(encoded.photo_vectors),
            "has_photo": encoded.has_photo,
        }
    ).sort_values("product_id", ignore_index=True)


@pytest.fixture(scope="module")
def local_run(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("local") / "embeddings"
    report = run_embed(bundle, engine="local", out=out, batch_size=16, rows_per_file=50, show_progress=False)
    return out, report.to_json()


def test_local_engine_gives_encode_listings_embeddings_in_the_documented_files(
    local_run: tuple[Path, dict], expected: pd.DataFrame
) -> None:
    out, report = local_run
    files = parquet_files(out)
    assert len(files) == math.ceil(len(expected) / 50) == report["files"]
    for path in files:
        assert pq.read_schema(path).equals(EMBEDDING_SCHEMA)
        assert pq.ParquetFile(path).metadata.num_rows <= 50
    got = _read(out)
    assert got["product_id"].tolist() == expected["product_id"].tolist()
    assert set(got["model_version"]) == {report["model_version"]}
    np.testing.assert_allclose(_matrix(got["embedding"]), _matrix(expected["embedding"]), atol=1e-5)
    np.testing.assert_allclose(_matrix(got["photo_vector"]), _matrix(expected["photo_vector"]), atol=1e-5)
    assert got["has_photo"].tolist() == expected["has_photo"].tolist()
    assert report["listings"] == len(expected) and report["photos"] > 0
    assert report["photos_missing"] == report["photos_undecodable"] == 0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_the_database_holds_them_so_opening_the_bundle_embeds_nothing(
    bundle: Path, local_run: tuple[Path, dict], expected: pd.DataFrame
) -> None:
    from fbmarket.service import Marketplace

    _, report = local_run
    assert report["stored_in_database"] == len(expected) and report["not_in_database"] == 0
    store = Store(_database(bundle), root=bundle)
    ids, vectors = store.load_embeddings(report["model_version"])
    store.close()
    assert ids == expected["product_id"].tolist()
    np.testing.assert_allclose(vectors, _matrix(expected["embedding"]), atol=1e-5)
    market = Marketplace.open(bundle, lazy_models=True)
    try:
        assert market.embedded_on_open == 0
        assert len(market.searcher.vectors) == len(expected)
    finally:
        market.close()


def test_ray_engine_gives_the_same_embeddings(bundle: Path, tmp_path: Path, expected: pd.DataFrame) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "ray-embeddings"
    report = run_embed(
        bundle, engine="ray", workers=1, out=out, batch_size=32, rows_per_file=60, show_progress=False
    ).to_json()
    assert report["engine"] == "ray" and report["listings"] == len(expected)
    assert report["photos"] > 0 and report["stored_in_database"] == len(expected)
    files = parquet_files(out)
    assert files and all(pq.read_schema(p).equals(EMBEDDING_SCHEMA) for p in files)
    assert all(pq.ParquetFile(p).metadata.num_rows <= 60 for p in files)
    got = _read(out)
    assert got["product_id"].tolist() == expected["product_id"].tolist()
    np.testing.assert_allclose(_matrix(got["embedding"]), _matrix(expected["embedding"]), atol=1e-5)
    np.testing.assert_allclose(_matrix(got["photo_vector"]), _matrix(expected["photo_vector"]), atol=1e-5)


def _export(bundle: Path, folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The listings and images tables as a Parquet export (what another tool would write)."""
    store = Store(_database(bundle), root=bundle)
    listings, photos = store.listings_frame(), store.images_frame()
    store.close()
    (folder / "listings").mkdir(parents=True)
    (folder / "images").mkdir()
    half = len(listings) // 2  # two files per table: a folder of parts is read whole
    listings.iloc[:half].to_parquet(folder / "listings" / "a.parquet")
    listings.iloc[half:].to_parquet(folder / "listings" / "b.parquet")
    photos.to_parquet(folder / "images" / "a.parquet")
    return listings, photos


def test_parquet_source_and_a_photo_that_does_not_decode(
    bundle: Path, tmp_path: Path, expected: pd.DataFrame
) -> None:
    listings, photos = _export(bundle, tmp_path / "export")
    without = listings[S.PRODUCT_ID][~listings[S.PRODUCT_ID].isin(photos[S.PRODUCT_ID])].astype(str)
    with_photo = photos[S.PRODUCT_ID].astype(str).iloc[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a JPEG at all")
    extra = pd.DataFrame(
        {
            S.IMAGE_ID: ["broken-photo", "gone-photo"],
            S.PRODUCT_ID: [with_photo, with_photo],
            S.IMAGE_PATH: [str(broken), str(tmp_path / "no-such-file.jpg")],
            "position": [98, 99],
        }
    )
    pd.concat([photos, extra], ignore_index=True).to_parquet(tmp_path / "export" / "images" / "a.parquet")

    out = tmp_path / "embeddings"
    report = run_embed(
        bundle, source=tmp_path / "export", out=out, store_in_database=False, show_progress=False
    ).to_json()
    assert report["listings"] == len(expected)
    assert report["photos_undecodable"] == 1 and report["photos_missing"] == 1
    assert report["stored_in_database"] == 0
    got = _read(out)
    # The broken and missing photos were left out: every listing is embedded as if they were not there.
    np.testing.assert_allclose(_matrix(got["embedding"]), _matrix(expected["embedding"]), atol=1e-5)
    assert got.set_index("product_id").loc[with_photo, "has_photo"]
    if len(without):
        assert not got.set_index("product_id").loc[without.iloc[0], "has_photo"]


def test_bad_inputs_are_clear_errors(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_embed(tmp_path / "no-bundle", show_progress=False)
    with pytest.raises(DataError, match="holds no listings"):
        run_embed(bundle, database_url=f"sqlite:///{tmp_path / 'empty.db'}", show_progress=False)
    with pytest.raises(DataError, match="port is not a number") as milvus:  # refused before any work
        run_embed(bundle, index_uri="milvus://user:secret@127.0.0.1:port", show_progress=False)
    assert "secret" not in str(milvus.value)  # the password is masked
    with pytest.raises(DataError, match="expected milvus://host:port"):
        run_embed(bundle, index_uri="faiss://nowhere", show_progress=False)
    unreadable = tmp_path / "bad"
    unreadable.mkdir()
    (unreadable / "listings.parquet").write_bytes(b"PAR1 but not really")
    (unreadable / "images.parquet").write_bytes(b"nothing")
    with pytest.raises(DataError, match="cannot be read"):
        run_embed(bundle, source=unreadable, show_progress=False)
    with pytest.raises(DataError, match="no images table"):
        half = tmp_path / "half"
        half.mkdir()
        pd.DataFrame({"product_id": ["a"], "title": ["t"], "description": [""]}).to_parquet(
            half / "listings.parquet"
        )
        run_embed(bundle, source=half, show_progress=False)
    with pytest.raises(DataError, match="not a folder"):
        run_embed(bundle, source=tmp_path / "nowhere", show_progress=False)


def test_embed_into_milvus_lite_then_search_it(bundle: Path, tmp_path: Path) -> None:
    """`fbmarket embed --engine local --index-uri <file>.db` ends with a searchable collection:
    every listing in it, its own embedding finds it first, its title's words find it, filters
    read the database's fields; loading the same Parquet again changes nothing."""
    pytest.importorskip("milvus_lite")
    from fbmarket.batch.embed import load_parquet_into_index
    from fbmarket.bundle.files import read_manifest
    from fbmarket.config import SearchSettings
    from fbmarket.layout import BundleLayout
    from fbmarket.search.backend import parse_index_uri
    from fbmarket.search.filters import Filters
    from fbmarket.search.milvus import MilvusBackend

    uri, out = str(tmp_path / "engine.db"), tmp_path / "embeddings"
    report = run_embed(bundle, engine="local", out=out, index_uri=uri, batch_size=32, show_progress=False)
    listings = Store(_database(bundle), root=bundle).listings_frame().set_index(S.PRODUCT_ID)
    assert report.indexed == report.listings == len(listings) > 0 and report.index == uri
    again = load_parquet_into_index(out, uri, bundle, show_progress=False)
    assert (again.loaded, again.other_version, again.not_in_database) == (len(listings), 0, 0)

    manifest = read_manifest(BundleLayout(bundle))
    backend = MilvusBackend.open(
        parse_index_uri(uri), manifest["embedding_dim"], manifest["feature_dim"], manifest["version"], SearchSettings()
    )
    try:
        assert backend.count() == backend.vector_count() == len(listings)  # upserts: no duplicates
        parquet = _read(out).set_index("product_id")
        for pid in parquet.index[:3]:
            assert backend.dense_search(np.asarray(parquet.at[pid, "embedding"]), 1, None)[0][0] == pid
            title = listings.at[pid, S.TITLE]
            assert pid in [hit for hit, _ in backend.lexical_search(title, 5, None)]
        cheap = backend.dense_search(np.asarray(parquet["embedding"].iloc[0]), 50, backend.select(Filters(max_price=20.0)))
        prices = listings.loc[[pid for pid, _ in cheap], S.PRICE]
        assert cheap and (prices <= 20.0).all()
        with_photo = parquet.index[parquet["has_photo"]]
        assert backend.photo_search(np.asarray(parquet.at[with_photo[0], "photo_vector"]), 1, None)[0][0] == with_photo[0]
    finally:
        backend.close()


def test_cli_reports_a_missing_bundle_in_one_line(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "fbmarket.cli", "embed", "--bundle", str(tmp_path / "none"), "--quiet"],
        cwd=ROOT,
        env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1].startswith("fbmarket embed: error:")
    assert "Traceback" not in completed.stderr


def test_an_unreachable_ray_address_is_a_data_error_within_seconds(tmp_path: Path) -> None:
    """`--ray-address HOST:PORT` where no cluster answers: `ray.init` retried for minutes (a
    hung job); now a DataError within RAY_CONNECT_TIMEOUT_S, and no local Ray is started."""
    import socket
    import time

    ray = pytest.importorskip("ray")
    from fbmarket.batch.embed import check_ray_address

    with socket.socket() as closed:  # a port nobody listens on: refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(DataError, match=rf"Ray cluster at '127.0.0.1:{port}'.*could not be reached"):
        run_embed(tmp_path / "no-bundle", engine="ray", ray_address=f"127.0.0.1:{port}", show_progress=False)
    assert time.monotonic() - start < 10 and not ray.is_initialized()

    with socket.socket() as silent:  # accepts the connection and never answers (a black hole)
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.monotonic()
        with pytest.raises(DataError, match="could not be reached within 0.5 s"):
            check_ray_address(f"ray://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
        assert time.monotonic() - start < 5
    with pytest.raises(DataError, match="expected HOST:PORT"):
        check_ray_address("head-node")


def test_a_grpc_server_passes_the_ray_address_check() -> None:
    """What the check asks of an address: a gRPC server's HTTP/2 answer, as Ray's GCS gives."""
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    from fbmarket.batch.embed import check_ray_address

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        check_ray_address(f"127.0.0.1:{port}")
        check_ray_address(f"ray://127.0.0.1:{port}")
    finally:
        server.stop(None)
