"""Synthetic re-posts of listings: the labelled examples the duplicate rule is fitted on.

There is no labelled set of duplicate listings, so one is made from a split of the data:
each sampled listing is posted again as a synthetic copy, of three kinds:

* "photo": its photos re-uploaded (cropped to 80-95% of each side, resized to 50-100%,
  re-encoded as JPEG at quality 30-75, then cleaned as an upload is), text unchanged;
* "text": the same photo files, the title lightly reworded (words reordered, one dropped, case
  and punctuation changed, a word swapped for a synonym: two of these) and the description
  pasted again with a sentence left out or its case changed;
* "both": the two together.

search/duplicate_training.py pairs each copy with its candidates and fits the rule.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fbmarket.config import DataSettings
from fbmarket.data import schema as S
from fbmarket.data.images import clean_image

log = logging.getLogger(__name__)

KINDS = ("photo", "text", "both")
COPY_PREFIX = "dupcopy"
# A few words sellers swap for one another: enough for "lightly reworded", not a thesaurus.
SYNONYMS = {
    "bike": "bicycle",
    "bicycle": "bike",
    "sofa": "couch",
    "couch": "sofa",
    "settee": "sofa",
    "tv": "television",
    "television": "tv",
    "phone": "mobile",
    "mobile": "phone",
    "kids": "childrens",
    "childrens": "kids",
    "children's": "kids",
    "large": "big",
    "big": "large",
    "small": "little",
    "new": "brand new",
    "used": "pre-owned",
    "excellent": "great",
    "great": "excellent",
    "good": "great",
    "condition": "cond",
    "table": "desk",
    "wardrobe": "closet",
    "chair": "seat",
    "trainers": "sneakers",
    "sneakers": "trainers",
    "mens": "men's",
    "womens": "women's",
    "ladies": "womens",
    "grey": "gray",
    "colour": "color",
    "fridge": "refrigerator",
    "cheap": "bargain",
    "sale": "offer",
    "x": "by",
    "and": "&",
    "&": "and",
    "with": "w/",
}
_WORD = re.compile(r"\S+")



def reword_title(title: str, rng: np.random.Generator) -> str:
    """The title as a re-poster retypes it: two light edits, and never the same string."""
    edits = [_reorder, _drop_word, _case_and_punctuation, _synonym]
    for _ in range(4):
        words = _WORD.findall(title)
        out = list(words)
        for edit in rng.permutation(len(edits))[:2]:
            out = edits[edit](out, rng)
        text = " ".join(out)
        if text != title:
            return text
    return title.upper() if title.upper() != title else f"{title}!"


def _reorder(words: list[str], rng: np.random.Generator) -> list[str]:
    if len(words) < 2:
        return words
    i = int(rng.integers(len(words) - 1))
    return words[:i] + [words[i + 1], words[i]] + words[i + 2 :]


def _drop_word(words: list[str], rng: np.random.Generator) -> list[str]:
    if len(words) < 3:
        return words
    i = int(rng.integers(len(words)))
    return words[:i] + words[i + 1 :]


def _case_and_punctuation(words: list[str], rng: np.random.Generator) -> list[str]:
    choice = int(rng.integers(4))
    if choice == 0:
        return [w.lower() for w in words]
    if choice == 1:
        return [w.upper() for w in words]
    if choice == 2:
        return [w.strip(".,!-:;()") or w for w in words] + ["!!"]
    return [w.capitalize() for w in words] + ["-"]


def _synonym(words: list[str], rng: np.random.Generator) -> list[str]:
    swappable = [i for i, w in enumerate(words) if w.lower().strip(".,!") in SYNONYMS]
    if not swappable:
        return _case_and_punctuation(words, rng)
    i = int(rng.choice(swappable))
    return words[:i] + [SYNONYMS[words[i].lower().strip(".,!")]] + words[i + 1 :]


def reword_description(description: str, rng: np.random.Generator) -> str:
    """The description as a re-poster pastes it again: one sentence (of several) left out, or
    the case changed; an empty one stays empty."""
    text = description.strip()
    if not text:
        return description
    sentences = [part for part in re.split(r"(?<=[.!?\n])\s+", text) if part]
    if len(sentences) > 1 and rng.random() < 0.7:
        drop = int(rng.integers(len(sentences)))
        return " ".join(sentences[:drop] + sentences[drop + 1 :])
    return text.lower() if text.lower() != text else text.capitalize() + " Thanks."


def perturb_photo(image: Image.Image, rng: np.random.Generator) -> bytes:
    """A re-upload of the photo: cropped to 80-95% per side, resized to 50-100%, JPEG q 30-75."""
    image = image.convert("RGB")
    w, h = image.size
    keep = rng.uniform(0.80, 0.95)
    cw, ch = max(1, int(w * keep)), max(1, int(h * keep))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = image.crop((left, top, left + cw, top + ch))
    scale = rng.uniform(0.5, 1.0)
    image = image.resize((max(8, int(cw * scale)), max(8, int(ch * scale))), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(30, 76)))
    return buffer.getvalue()


@dataclass
class Copies:
    """Synthetic re-posts: clean listing rows and photo rows, and which listing each copies."""

    products: pd.DataFrame
    images: pd.DataFrame  # photos of the copies: perturbed files (photo, both) or the originals' (text)
    meta: pd.DataFrame  # copy_id, original_id, kind
    perturbed: set[str]  # copy ids whose photos are new files (not in the bundle's feature cache)


def make_copies(
    products: pd.DataFrame,
    images: pd.DataFrame,
    originals: Sequence[str],
    folder: Path,
    data: DataSettings,
    max_photos: int,
    seed: int,
) -> Copies:
    """The three kinds of copy of each original (only "text" for one without photos).

    Perturbed photos are written under `folder` (the caller removes it): a copy's photos go
    through `clean_image` as an upload does, so they meet the backbone as a re-post would.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    table = products.set_index(products[S.PRODUCT_ID].astype(str), drop=False)
    by_product = {
        pid: frame.head(max_photos) for pid, frame in images.groupby(images[S.PRODUCT_ID].astype(str))
    }
    rows, photo_rows, meta, perturbed = [], [], [], set()
    for n, original in enumerate(originals):
        base = table.loc[original]
        photos = by_product.get(original)
        kinds = KINDS if photos is not None and len(photos) else ("text",)
        new_title = reword_title(str(base[S.TITLE]), rng)
        description = base[S.DESCRIPTION] if isinstance(base[S.DESCRIPTION], str) else ""
        new_description = reword_description(description, rng)
        for kind in kinds:
            copy_id = f"{COPY_PREFIX}-{kind}-{n}"
            reworded = kind in ("text", "both")
            rows.append(
                (
                    original,
                    copy_id,
                    new_title if reworded else base[S.TITLE],
                    new_description if reworded else description,
                )
            )
            meta.append({"copy_id": copy_id, "original_id": original, "kind": kind})
            if photos is None or not len(photos):
                continue
            if kind == "text":
                same = photos.copy()
                same[S.PRODUCT_ID] = copy_id
                photo_rows.extend(same.to_dict("records"))
                continue
            perturbed.add(copy_id)  # a re-upload of its own: the photo and both copies differ
            for position, path in enumerate(photos[S.IMAGE_PATH]):
                try:
                    with Image.open(path) as source:
                        upload = perturb_photo(source, rng)
                    cleaned = clean_image(
                        upload, data.image_size, data.max_image_pixels, data.max_image_bytes
                    )
                except OSError as error:  # a missing cached photo: the copy has one photo fewer
                    log.warning("photo %s not copied: %s", path, error)
                    continue
                image_id = f"{copy_id}-{position}"
                target = folder / f"{image_id}.jpg"
                cleaned.image.save(target, format="JPEG", quality=90)
                photo_rows.append({S.IMAGE_ID: image_id, S.PRODUCT_ID: copy_id, S.IMAGE_PATH: str(target)})
    columns = [S.IMAGE_ID, S.PRODUCT_ID, S.IMAGE_PATH]
    copies = table.loc[[row[0] for row in rows]].reset_index(drop=True)  # dtypes kept
    copies[S.PRODUCT_ID] = [row[1] for row in rows]
    copies[S.TITLE] = [row[2] for row in rows]
    copies[S.DESCRIPTION] = [row[3] for row in rows]
    photo_frame = pd.DataFrame(photo_rows)
    photo_frame = photo_frame[columns] if not photo_frame.empty else pd.DataFrame(columns=columns)
    return Copies(copies, photo_frame, pd.DataFrame(meta), perturbed)
