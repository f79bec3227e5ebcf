"""`fbmarket embed`: a catalogue's listing embeddings as Parquet, in-process or as a Ray Data job.

Why: opening a bundle embeds, in one process, the listings the database holds without an
embedding of its model (search/reconcile.py `embed_missing`). That is right for a laptop and
for live writes, but a new model over a catalogue of millions of listings (photos by the
billion) needs the work spread over many CPU or GPU workers, and its result in files a
distributed index bulk-loads rather than in one process's memory. This module is that job:

    source  ->  batches of listings (+ their photo paths)  ->  BatchEncoder  ->  Parquet
            ->  the database's embeddings table  (->  a retrieval index, `--index-uri`)

`BatchEncoder` loads the bundle once and calls `Bundle.encode_listings` on a batch: the
same code path `embed_missing` uses, so both engines give the embeddings serving gives.

Engines
-------
* `local`: the batches run one after another in this process (tqdm progress).
* `ray`: a Ray Data job. The listings become a `ray.data` dataset (`from_pandas`), then
  `map_batches(BatchEncoder, compute=ActorPoolStrategy(size=N), num_cpus=c)`: Ray starts
  N actors, each loads the bundle once in its constructor and embeds batch after batch
  (stateful callable class = actor pool: https://docs.ray.io/en/latest/data/api/doc/ray.data.Dataset.map_batches.html),
  and `write_parquet(max_rows_per_file=...)` streams the results out. Without an address
  the command starts Ray's local mode (`ray.init(num_cpus=..., include_dashboard=False,
  log_to_driver=False)`) and shuts it down at the end; `--ray-address` or `RAY_ADDRESS`
  joins an existing cluster instead (refused with a DataError when nothing answers on that
  address within 5 s, rather than Ray retrying for minutes; every node then needs fbmarket installed and the bundle
  and photo paths readable at the same place; not exercised by the tests).

Output: the Parquet schema (`EMBEDDING_SCHEMA`)
-----------------------------------------------
One row per listing, in files of at most `rows_per_file` rows (`part-*.parquet` for the local
engine, Ray's own names for the Ray engine):

| column         | Arrow type      | meaning                                                        |
|----------------|-----------------|----------------------------------------------------------------|
| product_id     | string          | the listing id (the primary key in the database and in Milvus) |
| model_version  | string          | `bundle.json` version of the model that embedded it            |
| embedding      | list<float32>   | (embedding_dim,) unit-length fusion embedding                  |
| photo_vector   | list<float32>   | (feature_dim,) unit-length mean backbone features of its photos; zeros without one |
| has_photo      | bool            | whether any photo of the listing was used                      |

The folder is written under a temporary name beside `--out` and renamed into place when
complete, so a reader sees the old folder or the new one, never half of one. The embeddings
are then stored in the database's `embeddings` table (the one `fbmarket index` fills, so
`serve` finds them and embeds nothing on open), read back from the Parquet in batches of
`DB_BATCH` rows, each batch one transaction; an upsert, so running the job twice changes
nothing.

Photos: a photo file that is missing, or that does not decode, is counted (`photos_missing`,
`photos_undecodable`) and left out; its listing is embedded from what remains (its text and
other photos). It never stops the job.

Scaling out
-----------
On a cluster, the same job runs with `--ray-address` on N CPU or GPU workers (`--workers N`
actors; `num_gpus` per actor is the one change for GPUs), reading a Parquet export of the
`listings` and `images` tables from object storage and writing Parquet back there. A Milvus
cluster then bulk-imports those files with `pymilvus.bulk_writer.bulk_import(url,
collection_name, files=[[...parquet], ...])`, one import job per list of files, without the
rows passing through a client (https://milvus.io/api-reference/pymilvus/v2.6.x/DataImport/BulkImport/bulk_import.md;
the files must be in the Milvus instance's bucket: https://milvus.io/docs/v2.5.x/import-data.md).
Here, `load_parquet_into_index` (`--index-uri`) does the same through the client instead:
it joins the Parquet rows with the listings' fields from the database and upserts them in
batches through `MilvusBackend` (search/milvus.py), which is what milvus-lite (no import
service) and a small server need; on a cluster the join belongs in the export (the listing
fields as columns of the same Parquet, in the collection's schema) and the load is the
`bulk_import` above. Here too, the driver still joins listings and photos in memory before
handing them to Ray: at hundreds of millions of listings that join belongs in the export
(photo paths as a list column of the listings Parquet), which is the next step and not done.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fbmarket.bundle.files import BundleError, read_manifest
from fbmarket.bundle.settings import load_bundle_settings
from fbmarket.config.secrets import mask_url_password
from fbmarket.data import schema as S
from fbmarket.data.store import Store, readable_photo_path
from fbmarket.errors import DataError
from fbmarket.files import fsync_dir
from fbmarket.layout import BundleLayout

if TYPE_CHECKING:
    from fbmarket.search.backend import IndexTarget

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
ROWS_PER_FILE = 20_000  # Parquet rows per file: ~120 MB at 1,536 float32s per row
DB_BATCH = 2048  # embeddings per database transaction (search/reconcile.py EMBED_CHUNK)
INDEX_BATCH = 512  # listings per upsert into Milvus (search/milvus.py UPSERT_BATCH)
DEFAULT_BATCH_SIZE = 64  # listings per model batch
PHOTO_IDS, PHOTO_PATHS = "photo_ids", "photo_paths"  # list columns a source row carries
COUNTS = ("listings", "photos", "photos_missing", "photos_undecodable", "encode_seconds")

EMBEDDING_SCHEMA = pa.schema(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),
        pa.field("photo_vector", pa.list_(pa.float32()), nullable=False),
        pa.field("has_photo", pa.bool_(), nullable=False),
    ]
)


@dataclass
class EmbedReport:
    """What a run did; `to_json` is what `fbmarket embed` prints."""

    engine: str
    workers: int
    source: str
    out: str
    model_version: str
    listings: int = 0
    photos: int = 0  # photos that went through the backbone
    photos_missing: int = 0
    photos_undecodable: int = 0
    encode_seconds: float = 0.0  # summed over workers: time inside `BatchEncoder.encode` (no start-up)
    files: int = 0
    stored_in_database: int = 0
    not_in_database: int = 0  # ids of a Parquet source that the database has no listing for
    index: str | None = None  # the Milvus engine loaded (`--index-uri`, password masked)
    indexed: int = 0  # listings written into it
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- sources
def database_rows(store: Store, missing_only_version: str | None = None) -> pd.DataFrame:
    """The database's listings, each with its photos' ids and readable paths as list columns.

    `missing_only_version`: only the listings without an embedding of that model version.
    """
    listings = store.listings_frame()
    if missing_only_version is not None and not listings.empty:
        versions = store.embedding_versions()
        stale = listings[S.PRODUCT_ID].astype(str).map(lambda pid: versions.get(pid) != missing_only_version)
        listings = listings[stale.to_numpy()]
    photos = (
        store.images_frame(listings[S.PRODUCT_ID].astype(str).tolist()) if len(listings) else pd.DataFrame()
    )
    return with_photo_lists(listings, photos, None)


def parquet_rows(directory: Path, bundle_dir: Path) -> pd.DataFrame:
    """Listings from a Parquet export: `directory/listings/` and `directory/images/` (files or
    folders of files) with the columns of the database tables of those names. A relative
    photo path is relative to the bundle, as the database stores it.

    Raises DataError when a table is missing, unreadable or lacks a column embedding needs.
    """
    tables = {}
    for name in ("listings", "images"):
        candidates = [directory / name, directory / f"{name}.parquet"]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise DataError(
                f"Parquet source {directory} has no {name} table: expected {name}/ or {name}.parquet"
            )
        try:
            tables[name] = pq.read_table(path).to_pandas()
        except (OSError, pa.ArrowException) as error:
            raise DataError(f"Parquet source {path} cannot be read: {error}") from None
    listings, photos = tables["listings"], tables["images"]
    S.require_columns(
        listings, (S.PRODUCT_ID, S.TITLE, S.DESCRIPTION), f"{directory}/listings"
    )  # SchemaError
    S.require_columns(photos, (S.IMAGE_ID, S.PRODUCT_ID, S.IMAGE_PATH), f"{directory}/images")
    return with_photo_lists(listings, photos, bundle_dir)


def with_photo_lists(listings: pd.DataFrame, photos: pd.DataFrame, root: Path | None) -> pd.DataFrame:
    """`listings` plus `photo_ids` / `photo_paths` list columns (photos in `position` order when
    the table has it); paths made openable against the bundle `root` when given."""
    out = listings.reset_index(drop=True).copy()
    out[S.PRODUCT_ID] = out[S.PRODUCT_ID].astype(str)
    ids: dict[str, list[str]] = {}
    paths: dict[str, list[str]] = {}
    if len(photos):
        photos = photos.sort_values([S.PRODUCT_ID, "position"]) if "position" in photos else photos
        for image_id, pid, path in zip(
            photos[S.IMAGE_ID].astype(str),
            photos[S.PRODUCT_ID].astype(str),
            photos[S.IMAGE_PATH].astype(str),
            strict=True,
        ):
            ids.setdefault(pid, []).append(image_id)
            paths.setdefault(pid, []).append(readable_photo_path(path, root) if root is not None else path)
    out[PHOTO_IDS] = [ids.get(pid, []) for pid in out[S.PRODUCT_ID]]
    out[PHOTO_PATHS] = [paths.get(pid, []) for pid in out[S.PRODUCT_ID]]
    return out


# ---------------------------------------------------------------------------- one batch
class BatchEncoder:
    """Embeds batches of source rows with one bundle, loaded once (a Ray actor's state).

    `threads` caps TensorFlow's thread pools (a Ray actor gets its `num_cpus`, so actors on
    one machine do not fight over cores). `tally` is a Ray actor handle that receives each
    batch's counts (the Ray engine); without it the counts stay in `self.counts`.
    """

    def __init__(
        self, bundle_dir: str, use_cache: bool = False, threads: int | None = None, tally: Any = None
    ):
        import tensorflow as tf

        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # TensorFlow already started in this process: keep its pools
                pass
        from fbmarket.bundle import Bundle

        self.bundle = Bundle.load(bundle_dir, lazy=True)
        self.use_cache = use_cache
        self.tally = tally
        self.counts: dict[str, float] = dict.fromkeys(COUNTS, 0)

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        table, counts = self.encode(batch)
        for key, value in counts.items():
            self.counts[key] += value
        if self.tally is not None:
            self.tally.add.remote(counts)
        return table

    def encode(self, batch: pd.DataFrame) -> tuple[pa.Table, dict[str, float]]:
        """An `EMBEDDING_SCHEMA` table for the batch's listings, in row order, and its counts
        (`COUNTS`; `encode_seconds` is this call's wall time)."""
        import tensorflow as tf

        tick = time.perf_counter()
        products = batch.drop(columns=[PHOTO_IDS, PHOTO_PATHS]).reset_index(drop=True)
        products[S.PRODUCT_ID] = products[S.PRODUCT_ID].astype(str)
        photos = _photo_frame(batch)
        present = (
            photos[S.IMAGE_PATH].map(os.path.isfile).to_numpy(bool) if len(photos) else np.zeros(0, bool)
        )
        counts: dict[str, float] = dict.fromkeys(COUNTS, 0)
        counts["listings"] = len(products)
        counts["photos_missing"] = int((~present).sum())
        photos = photos[present]
        try:
            encoded = self.bundle.encode_listings(products, photos, use_cache=self.use_cache)
        except tf.errors.OpError:  # a photo that does not decode stops tf.data: find it, drop it
            good = photos[S.IMAGE_PATH].map(_decodes).to_numpy(bool)
            bad = photos.loc[~good, S.IMAGE_PATH].tolist()
            log.warning("%d photo(s) do not decode and were left out: %s", len(bad), ", ".join(bad[:5]))
            counts["photos_undecodable"] = len(bad)
            photos = photos[good]
            encoded = self.bundle.encode_listings(products, photos, use_cache=self.use_cache)
        counts["photos"] = len(photos)
        n = len(products)
        table = pa.Table.from_arrays(
            [
                pa.array(products[S.PRODUCT_ID].tolist(), pa.string()),
                pa.array([self.bundle.version] * n, pa.string()),
                _list_array(encoded.embeddings),
                _list_array(encoded.photo_vectors),
                pa.array(encoded.has_photo.astype(bool), pa.bool_()),
            ],
            schema=EMBEDDING_SCHEMA,
        )
        counts["encode_seconds"] = time.perf_counter() - tick
        return table, counts


def _photo_frame(batch: pd.DataFrame) -> pd.DataFrame:
    """The batch's photos as the images frame `encode_listings` takes (image_id, product_id, path)."""
    rows = [
        (str(image_id), str(pid), str(path))
        for pid, ids, paths in zip(batch[S.PRODUCT_ID], batch[PHOTO_IDS], batch[PHOTO_PATHS], strict=True)
        for image_id, path in zip(list(ids), list(paths), strict=True)
    ]
    return pd.DataFrame(rows, columns=[S.IMAGE_ID, S.PRODUCT_ID, S.IMAGE_PATH])


def _decodes(path: str) -> bool:
    """Whether TensorFlow's decoder (the one vision/features.py feeds the backbone with) reads it."""
    import tensorflow as tf

    try:
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.OpError:
        return False
    return True


def _list_array(values: np.ndarray) -> pa.ListArray:
    """(n, d) float32 -> Arrow list<float32> of n rows (one buffer, no per-row Python objects)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    n, d = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32), pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), pa.float32()))


# ---------------------------------------------------------------------------- engines
def _batches(rows: pd.DataFrame, batch_size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(rows), batch_size):
        yield rows.iloc[start : start + batch_size]


class _PartWriter:
    """Parquet files of at most `rows_per_file` rows: part-00000.parquet, part-00001.parquet, ..."""

    def __init__(self, directory: Path, rows_per_file: int):
        self.directory, self.rows_per_file = directory, rows_per_file
        self.files = 0
        self._writer: pq.ParquetWriter | None = None
        self._rows = 0

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self._writer is None:
                path = self.directory / f"part-{self.files:05d}.parquet"
                self._writer = pq.ParquetWriter(path, EMBEDDING_SCHEMA)
                self.files += 1
                self._rows = 0
            take = min(table.num_rows, self.rows_per_file - self._rows)
            self._writer.write_table(table.slice(0, take))
            self._rows += take
            table = table.slice(take)
            if self._rows >= self.rows_per_file:
                self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def run_local(
    rows: pd.DataFrame,
    bundle_dir: Path,
    out_dir: Path,
    batch_size: int,
    rows_per_file: int,
    use_cache: bool = False,
    show_progress: bool = True,
) -> dict[str, float]:
    """Embed `rows` in this process, writing Parquet parts into `out_dir`; returns the counts."""
    from tqdm.auto import tqdm

    encoder = BatchEncoder(str(bundle_dir), use_cache)
    writer = _PartWriter(out_dir, rows_per_file)
    steps = math.ceil(len(rows) / batch_size)
    try:
        for batch in tqdm(
            _batches(rows, batch_size), total=steps, desc="embed", unit="batch", disable=not show_progress
        ):
            writer.write(encoder(batch))
    finally:
        writer.close()
    return encoder.counts


def run_ray(
    rows: pd.DataFrame,
    bundle_dir: Path,
    out_dir: Path,
    batch_size: int,
    rows_per_file: int,
    workers: int,
    cpus_per_worker: float = 1.0,
    use_cache: bool = False,
    show_progress: bool = True,
    address: str | None = None,
) -> dict[str, float]:
    """Embed `rows` as a Ray Data job of `workers` actors (`cpus_per_worker` CPUs each).

    Starts Ray's local mode unless `address` (or RAY_ADDRESS) names a cluster, and shuts
    down what it started. Returns the counts the actors reported.
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    started = False
    if not ray.is_initialized():
        if address:  # run_embed has checked it answers (`check_ray_address`) before any work
            ray.init(address=address, log_to_driver=False)
        else:
            # One logical CPU more than the actors take: Ray Data's read and write tasks need one.
            ray.init(
                num_cpus=math.ceil(workers * cpus_per_worker) + 1,
                include_dashboard=False,
                log_to_driver=False,
                object_store_memory=_object_store_bytes(rows),
            )
        started = True
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = show_progress
        tally = ray.remote(_Tally).options(num_cpus=0).remote()
        # One block per batch, split here (from_pandas' own override_num_blocks fails on pandas 3).
        dataset = ray.data.from_pandas(list(_batches(rows, batch_size)))
        dataset = dataset.map_batches(
            BatchEncoder,
            fn_constructor_kwargs={
                "bundle_dir": str(bundle_dir),
                "use_cache": use_cache,
                "threads": max(1, int(cpus_per_worker)),
                "tally": tally,
            },
            batch_size=batch_size,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=workers),  # `concurrency=N` before Ray 2.51
            num_cpus=cpus_per_worker,
        )
        dataset.write_parquet(str(out_dir), max_rows_per_file=rows_per_file)
        return dict(ray.get(tally.totals.remote()))
    finally:
        if started:
            ray.shutdown()


RAY_CONNECT_TIMEOUT_S = 5.0  # how long `check_ray_address` waits for the cluster to answer
# An HTTP/2 client preface and an empty SETTINGS frame: every gRPC server (Ray's GCS, the Ray
# Client server) answers with a SETTINGS frame of its own (RFC 9113 section 3.4).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_HTTP2_SETTINGS = 0x4


def check_ray_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """DataError unless a gRPC server (what a Ray cluster's HOST:PORT, or ray://HOST:PORT, is)
    answers there within `timeout` seconds.

    `ray.init(address=...)` keeps retrying an address nobody answers on (over a minute, then
    more retries), so a typo or a cluster that is down looked like a hung job. A TCP connect
    alone is not enough: a proxy or firewall may accept every connection and never answer, so
    the check waits for the server's first HTTP/2 frame. "auto" and "local" are Ray's words
    for "find / start one on this machine" and are left to Ray."""
    if address in ("auto", "local"):
        return
    where = f"Ray cluster at {address!r} (--ray-address / RAY_ADDRESS)"
    parsed = urlsplit(address if "://" in address else f"ray-gcs://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise DataError(f"{where}: expected HOST:PORT (e.g. 10.0.0.5:6379) or ray://HOST:PORT")
    try:
        answered = _first_http2_frame_type(host, port, timeout) == _HTTP2_SETTINGS
        reason = "it answered, but not as a Ray (gRPC) server"
    except TimeoutError:
        answered, reason = False, "no answer"
    except OSError as error:
        answered, reason = False, error.strerror or str(error)
    if not answered:
        raise DataError(
            f"the {where} could not be reached within {timeout:g} s ({reason}): start the cluster "
            "(`ray start --head`) or fix the address; without one, `--engine ray` runs Ray on this machine"
        )


def _first_http2_frame_type(host: str, port: int, timeout: float) -> int | None:
    """The type of the first HTTP/2 frame the server at host:port sends after our preface
    (None: it closed the connection first). One deadline for the connect and the reply."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.sendall(_HTTP2_PREFACE)
        header = b""
        while len(header) < 9:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply")
            connection.settimeout(left)
            chunk = connection.recv(9 - len(header))
            if not chunk:
                return None
            header += chunk
    return header[3]


def _object_store_bytes(rows: pd.DataFrame) -> int:
    """Ray's object store for local mode: small (the default takes 30% of RAM, shared here)."""
    return max(256 * 2**20, min(2 * 2**30, 64 * 2**10 * len(rows)))


class _Tally:
    """Sums the counts the encoder actors report (a Ray actor: workers run in other processes)."""

    def __init__(self) -> None:
        self.counts: dict[str, float] = dict.fromkeys(COUNTS, 0)

    def add(self, counts: dict[str, float]) -> None:
        for key, value in counts.items():
            self.counts[key] += value

    def totals(self) -> dict[str, float]:
        return self.counts


# ---------------------------------------------------------------------------- publish, store, index
def publish(temp: Path, out: Path) -> None:
    """Rename the finished folder `temp` to `out`, replacing an older `out` (kept until the
    rename succeeded, then removed): a reader sees a whole folder, old or new."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(out, old)
    try:
        os.replace(temp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def parquet_files(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*.parquet") if not p.name.startswith("."))


def store_embeddings(store: Store, directory: Path, batch_rows: int = DB_BATCH) -> tuple[int, int]:
    """Upsert the Parquet output's embeddings into the database, `batch_rows` per transaction.

    Returns (stored, not_in_database): a row whose listing the database does not have is
    skipped (an embedding belongs to a listing) and counted.
    """
    known = set(store.listings_frame()[S.PRODUCT_ID].astype(str))
    stored = skipped = 0
    for path in parquet_files(directory):
        for record in pq.ParquetFile(path).iter_batches(
            batch_size=batch_rows, columns=["product_id", "model_version", "embedding"]
        ):
            ids = record.column(0).to_pylist()
            keep = [i for i, pid in enumerate(ids) if pid in known]
            skipped += len(ids) - len(keep)
            if not keep:
                continue
            embedding = record.column(2)
            width = len(embedding[0]) if len(embedding) else 0
            vectors = embedding.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
            versions = record.column(1).to_pylist()
            for version in sorted({versions[i] for i in keep}):  # one version per run; any number works
                rows = [i for i in keep if versions[i] == version]
                store.upsert_embeddings([ids[i] for i in rows], vectors[rows], version)
            stored += len(keep)
    return stored, skipped


def load_parquet_into_index(
    parquet_dir: Path,
    index_uri: str,
    bundle_dir: Path,
    *,
    database_url: str | None = None,
    batch_rows: int = INDEX_BATCH,
    show_progress: bool = True,
) -> IndexLoad:
    """Load the Parquet output of `fbmarket embed` into the Milvus collection at `index_uri`.

    Each Parquet row's embedding and pooled photo vector (`EMBEDDING_SCHEMA`) is joined with
    its listing's fields from the bundle's database (or `database_url`: title, description,
    category, price, location, created, photo count) and written through
    `MilvusBackend.upsert` (search/milvus.py), `batch_rows` listings per call (a tqdm bar):
    idempotent, since rows are keyed by product id, so a rerun or an overlapping run
    replaces, never duplicates. Rows of another model version than the bundle's, and rows
    whose listing the database no longer has, are skipped and counted. Listings the
    collection holds that this Parquet does not name are left alone (`fbmarket index
    --index-uri` reconciles the whole catalogue, removals included).

    The embedded default (FAISS) needs no call: it is rebuilt from the database's embeddings
    when a bundle opens (search/reconcile.py). On a cluster the rows would not pass through a
    client: see the module docstring (Parquet on object storage + `bulk_import`).

    Raises DataError (one line, naming --index-uri, password masked) for a URI that is not a
    Milvus engine, an engine that cannot be reached, or a collection of other dims.
    """
    from tqdm.auto import tqdm

    from fbmarket.search.backend import parse_index_uri
    from fbmarket.search.milvus import MilvusBackend

    target = check_index_uri(index_uri)
    bundle_dir = Path(os.path.abspath(bundle_dir))
    settings = load_bundle_settings(bundle_dir).with_environment()
    if database_url:
        settings.database_url = database_url
    manifest = read_manifest(BundleLayout(bundle_dir))
    version = str(manifest["version"])
    photo_dim = int(manifest["feature_dim"]) if "feature_dim" in manifest else None
    files = parquet_files(Path(parquet_dir))
    total = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    result = IndexLoad(index=target.shown)
    backend = MilvusBackend.open(parse_index_uri(index_uri), int(manifest["embedding_dim"]), photo_dim, version, settings.search)
    store = Store(settings.db_url, root=bundle_dir)
    try:
        listings = store.listings_frame()
        listings = listings.set_index(listings[S.PRODUCT_ID].astype(str), drop=False)
        counts = store.photo_counts()
        bar = tqdm(total=total, desc="loading Milvus", unit="listing", disable=not show_progress)
        for path in files:
            for record in pq.ParquetFile(path).iter_batches(
                batch_size=batch_rows, columns=["product_id", "model_version", "embedding", "photo_vector", "has_photo"]
            ):
                table = record.to_pydict()
                ids = [str(pid) for pid in table["product_id"]]
                ours = [i for i in range(len(ids)) if table["model_version"][i] == version]
                keep = [i for i in ours if ids[i] in listings.index]
                result.other_version += len(ids) - len(ours)
                result.not_in_database += len(ours) - len(keep)
                if keep:
                    kept = [ids[i] for i in keep]
                    has_photo = np.array([bool(table["has_photo"][i]) for i in keep], bool)
                    photos = None
                    if photo_dim is not None:
                        photos = np.zeros((len(keep), photo_dim), np.float32)
                        for row, i in enumerate(keep):
                            if has_photo[row] and len(table["photo_vector"][i]) == photo_dim:
                                photos[row] = table["photo_vector"][i]
                    backend.upsert(
                        listings.loc[kept].reset_index(drop=True),
                        np.array([table["embedding"][i] for i in keep], np.float32),
                        photos,
                        has_photo,
                        [counts.get(pid, 0) for pid in kept],
                    )
                    result.loaded += len(keep)
                bar.update(len(ids))
        bar.close()
    finally:
        store.close()
        backend.close()
    return result


@dataclass
class IndexLoad:
    """What `load_parquet_into_index` did: `loaded` rows written; rows skipped because their
    model version is not the bundle's, or their listing is not in the database."""

    index: str
    loaded: int = 0
    other_version: int = 0
    not_in_database: int = 0


def check_index_uri(index_uri: str) -> IndexTarget:
    """The Milvus engine `index_uri` names (search/backend.py `parse_index_uri`); DataError for
    anything else, before the job starts, so a URI it would refuse costs no embedding work."""
    from fbmarket.search.backend import parse_index_uri

    target = parse_index_uri(index_uri)  # DataError naming --index-uri, password masked
    if target.embedded:
        raise DataError(
            "--index-uri: leave it out for the embedded FAISS index (rebuilt from the database "
            "when a bundle opens); give milvus://host:port or a milvus-lite .db file to load Milvus",
            field="index_uri",
        )
    return target


# ---------------------------------------------------------------------------- the command
def run_embed(
    bundle_dir: Path | str,
    *,
    engine: str = "local",
    source: str | Path = "database",
    out: Path | str | None = None,
    workers: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    database_url: str | None = None,
    index_uri: str | None = None,
    store_in_database: bool = True,
    missing_only: bool = False,
    use_cache: bool = False,
    ray_address: str | None = None,
    rows_per_file: int = ROWS_PER_FILE,
    show_progress: bool = True,
) -> EmbedReport:
    """Embed a catalogue with a bundle's model: Parquet at `out` (default `<bundle>/embeddings/`),
    then the database's embeddings table, then `index_uri` when given.

    `source` is "database" (the bundle's database, or `database_url`) or a folder holding a
    Parquet export of the `listings` and `images` tables. Raises DataError for an engine, a
    source or a setting that cannot be used, and BundleError (a FileNotFoundError) for a
    folder that is not a bundle.
    """
    if engine not in ENGINES:
        raise DataError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if workers < 1 or batch_size < 1 or rows_per_file < 1:
        raise DataError("--workers, --batch-size and the rows per file must be at least 1")
    if index_uri:  # refuse an index this build cannot load before any work is done
        check_index_uri(index_uri)
    if engine == "ray" and (ray_address or os.environ.get("RAY_ADDRESS")):  # likewise a cluster
        check_ray_address(ray_address or os.environ["RAY_ADDRESS"])
    bundle_dir = Path(os.path.abspath(bundle_dir))
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle folder {bundle_dir} does not exist (train one with `fbmarket train`)")
    settings = load_bundle_settings(bundle_dir).with_environment()
    if database_url:
        settings.database_url = database_url
    layout = BundleLayout(bundle_dir)
    version = str(read_manifest(layout)["version"])
    out_dir = Path(os.path.abspath(out)) if out else layout.root / "embeddings"
    timings: dict[str, float] = {}

    tick = time.perf_counter()
    store = Store(settings.db_url, root=bundle_dir) if (store_in_database or source == "database") else None
    try:
        if str(source) == "database":
            assert store is not None
            rows = database_rows(store, version if missing_only else None)
            origin = f"database {mask_url_password(settings.db_url)}"
            if rows.empty and not missing_only:
                raise DataError(f"the {origin} holds no listings: nothing to embed")
        else:
            folder = Path(source)
            if not folder.is_dir():
                raise DataError(
                    f"Parquet source {folder} is not a folder (expected listings/ and images/ in it)"
                )
            rows = parquet_rows(folder, bundle_dir)
            origin = f"Parquet {folder}"
            if rows.empty:
                raise DataError(f"the {origin} holds no listings: nothing to embed")
        timings["read"] = round(time.perf_counter() - tick, 2)
        report = EmbedReport(engine, workers, origin, str(out_dir), version, seconds=timings)
        if rows.empty:  # --missing-only and every listing has an embedding of this model
            return report

        tick = time.perf_counter()
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        try:
            if engine == "local":
                counts = run_local(
                    rows, bundle_dir, temp, batch_size, rows_per_file, use_cache, show_progress
                )
            else:
                counts = run_ray(
                    rows,
                    bundle_dir,
                    temp,
                    batch_size,
                    rows_per_file,
                    workers,
                    use_cache=use_cache,
                    show_progress=show_progress,
                    address=ray_address,
                )
            written = sum(pq.ParquetFile(p).metadata.num_rows for p in parquet_files(temp))
            if written != len(rows):
                raise RuntimeError(f"the job wrote {written} rows for {len(rows)} listings")
            publish(temp, out_dir)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        timings["embed"] = round(time.perf_counter() - tick, 2)
        for key in COUNTS:
            value = counts.get(key, 0)
            setattr(report, key, round(float(value), 2) if key == "encode_seconds" else int(value))
        report.files = len(parquet_files(out_dir))
        if report.photos_undecodable or report.photos_missing:
            log.warning(
                "%d photo(s) missing and %d that do not decode were left out (their listings were "
                "embedded from the rest)",
                report.photos_missing,
                report.photos_undecodable,
            )

        if store_in_database:
            assert store is not None
            tick = time.perf_counter()
            report.stored_in_database, report.not_in_database = store_embeddings(store, out_dir)
            timings["database"] = round(time.perf_counter() - tick, 2)
        if index_uri:
            tick = time.perf_counter()
            loaded = load_parquet_into_index(
                out_dir, index_uri, bundle_dir, database_url=database_url, show_progress=show_progress
            )
            report.index = loaded.index
            report.indexed = loaded.loaded
            timings["index"] = round(time.perf_counter() - tick, 2)
        return report
    finally:
        if store is not None:
            store.close()
