"""Where everything lives inside a bundle folder (`artifacts/` by default): the one list of names.

Every module that reads or writes a bundle file gets its path from `BundleLayout`, so the
folder has one owner of its shape: renaming or moving a file is one edit here, and a
newcomer finds every file of a bundle in one place. The bundle's own files:

    bundle.json              manifest: version, classes, image weights used, sizes, metrics
    settings.json            the run's settings (secrets masked)
    model/text_model.keras   text-only classifier (its vocabularies inside)
    model/image_backbone.keras  photo feature extractor (trained or pretrained)
    model/image_head.keras   image-only classifier over photo features
    model/fusion.keras       FusionModel: product embedding, category head, query encoder
    model/word2vec.bin       Word2Vec vectors (word2vec binary format; a training record)
    model/vocabulary.json    Embedding-layer vocabulary with counts (the query vocabulary)
    model/tabular.json       price/location standardisation
    model/leaves.json        leaf categories of the fusion model's auxiliary head
    model/tfidf.json, tfidf.npz   TF-IDF text model (optional: a late-fusion member)
    model/neighbours.npz          neighbour-vote members' references (optional: late-fusion members)
    model/late_fusion.keras  the pooling head over every member (optional)
    model/price.json, price_*.txt/json/npz  the seller's price model (optional; fbmarket/price/)
    model/duplicates.json    the duplicate-listing rule and thresholds (optional)
    metrics.json, reports/   evaluation figures and confusion matrices
    split.json               the persisted train/val/test split of product ids
    embeddings.npy, embedding_ids.json  every listing's fusion embedding (what `index` built from)
    index/vectors.faiss, index/photos.faiss  the FAISS indexes (caches of the database)
    ranking/                 buyer profiles and the learned ranker
    fbmarket.db              the default SQLite database
    cache/                   cleaned photos and the photo feature cache
    checkpoints/             best-epoch weights during training
    summary.json             `python main.py`'s run summary

The root categories are stored once, in bundle.json. Bundles written before that also hold
`model/labels.json` and `categories.json` (copies nothing reads); `Bundle.save` removes them.

The component file names (tfidf.json, price.json, duplicates.json, word2vec.bin,
vocabulary.json) are also the names their own `save(directory)` writes;
tests/test_bundle_layout.py checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSION = 1  # bundle.json's "format"


@dataclass(frozen=True)
class BundleLayout:
    """The paths of one bundle folder. Cheap and immutable: make one wherever a path is needed."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ------------------------------------------------------------------ top level
    @property
    def manifest(self) -> Path:
        return self.root / "bundle.json"

    @property
    def settings(self) -> Path:
        return self.root / "settings.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def split(self) -> Path:
        return self.root / "split.json"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings.npy"

    @property
    def embedding_ids(self) -> Path:
        return self.root / "embedding_ids.json"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def vector_index(self) -> Path:
        return self.index_dir / "vectors.faiss"

    @property
    def photo_index(self) -> Path:
        """Pooled photo features of each listing with photos."""
        return self.index_dir / "photos.faiss"

    @property
    def ranking_dir(self) -> Path:
        return self.root / "ranking"

    @property
    def database(self) -> Path:
        """The default SQLite database inside a bundle (`Settings.db_url`)."""
        return self.root / DATABASE_FILE

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def feature_cache(self) -> Path:
        return self.cache_dir / "features"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def sample_data(self) -> Path:
        """Where `python main.py` without --data generates the synthetic marketplace."""
        return self.root / "sample_data"

    # ------------------------------------------------------------------ model/
    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def text_model(self) -> Path:
        return self.model_dir / "text_model.keras"

    @property
    def backbone(self) -> Path:
        return self.model_dir / "image_backbone.keras"

    @property
    def image_head(self) -> Path:
        return self.model_dir / "image_head.keras"

    @property
    def fusion(self) -> Path:
        return self.model_dir / "fusion.keras"

    @property
    def word2vec(self) -> Path:
        return self.model_dir / "word2vec.bin"

    @property
    def vocabulary(self) -> Path:
        return self.model_dir / "vocabulary.json"

    @property
    def tabular(self) -> Path:
        return self.model_dir / "tabular.json"

    @property
    def leaves(self) -> Path:
        return self.model_dir / "leaves.json"

    @property
    def tfidf(self) -> Path:
        return self.model_dir / "tfidf.json"

    @property
    def tfidf_weights(self) -> Path:
        return self.model_dir / "tfidf.npz"

    @property
    def neighbours(self) -> Path:
        return self.model_dir / "neighbours.npz"

    @property
    def late_fusion(self) -> Path:
        return self.model_dir / "late_fusion.keras"

    @property
    def price(self) -> Path:
        """The price model's metadata; its presence means "this bundle has a price model"."""
        return self.model_dir / "price.json"

    @property
    def duplicates(self) -> Path:
        return self.model_dir / "duplicates.json"

    # ------------------------------------------------------------------ legacy copies
    @property
    def legacy_labels(self) -> Path:
        """Root classes, a copy of bundle.json's (bundles written before the layout)."""
        return self.model_dir / "labels.json"

    @property
    def legacy_categories(self) -> Path:
        """Root classes, a copy of bundle.json's (bundles written before the layout)."""
        return self.root / "categories.json"

    # ------------------------------------------------------------------ helpers
    def relative(self, path: Path) -> str:
        """`path` as bundle.json's "files" names it: relative to the root, with forward slashes."""
        return path.relative_to(self.root).as_posix()


DATABASE_FILE = "fbmarket.db"  # also what a moved bundle's database URL is recognised by
