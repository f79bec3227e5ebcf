"""Clean tables -> model-ready product features: price, location, photo and token counts."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from fbmarket.data import schema as S

LOG_PRICE = "log_price"
N_IMAGES = "n_images"
IMAGE_WIDTH = "image_width"  # mean over the product's photos
IMAGE_HEIGHT = "image_height"
IMAGE_ASPECT = "image_aspect"
TITLE_TOKENS = "title_tokens"
DESCRIPTION_TOKENS = "description_tokens"
FEATURE_COLUMNS = (
    LOG_PRICE,
    N_IMAGES,
    IMAGE_WIDTH,
    IMAGE_HEIGHT,
    IMAGE_ASPECT,
    TITLE_TOKENS,
    DESCRIPTION_TOKENS,
)

_WORD = re.compile(r"\w+", re.UNICODE)


def count_tokens(text: pd.Series) -> pd.Series:
    """Word counts: cheap, tokeniser-independent length features (the model has its own tokeniser)."""
    return text.fillna("").map(lambda t: len(_WORD.findall(t))).astype(np.int64)


def add_features(products: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """Price, photo and text-length features; a product without photos gets zeros, not NaN."""
    frame = products.copy()
    frame[LOG_PRICE] = np.log1p(frame[S.PRICE].clip(lower=0))
    per_product = images.groupby(S.PRODUCT_ID).agg(
        **{
            N_IMAGES: (S.IMAGE_ID, "count"),
            IMAGE_WIDTH: (S.WIDTH, "mean"),
            IMAGE_HEIGHT: (S.HEIGHT, "mean"),
            IMAGE_ASPECT: (S.ASPECT, "mean"),
        }
    )
    joined = frame[[S.PRODUCT_ID]].join(per_product, on=S.PRODUCT_ID)
    for column in (N_IMAGES, IMAGE_WIDTH, IMAGE_HEIGHT, IMAGE_ASPECT):
        frame[column] = joined[column].fillna(0).to_numpy()
    frame[N_IMAGES] = frame[N_IMAGES].astype(np.int64)
    frame[TITLE_TOKENS] = count_tokens(frame[S.TITLE])
    frame[DESCRIPTION_TOKENS] = count_tokens(frame[S.DESCRIPTION])
    return frame
