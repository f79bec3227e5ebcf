"""Procedural product photos for the synthetic marketplace.

Each root category has its own shape family, colour palette and surface texture, so
an image model has something real to learn; per-product variation (palette jitter,
scale, rotation, position), random cluttered backgrounds and sensor noise keep it from
being trivial. Photos of one product share a `Look`, so they resemble each other the
way several photos of one sofa do. Everything is drawn with Pillow polygons and a few
numpy array operations, which keeps a photo at a few milliseconds.

`encode_photo` then writes the bytes the way real scraped data arrives: mostly JPEG,
but also grayscale, CMYK, EXIF-rotated, palette and RGBA files (PNG bytes under a
`.jpg` name), truncated downloads, empty files and HTML error pages.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

Colour = tuple[int, int, int]
Shape = tuple[str, np.ndarray, Colour | None]  # (role, unit-space polygon (k, 2), explicit colour)

# Palettes per root, in ROOT_NAMES order: (body colours, accent colours).
PALETTES: tuple[tuple[tuple[Colour, ...], tuple[Colour, ...]], ...] = (
    (((235, 235, 235), (200, 205, 210), (245, 245, 238)), ((70, 110, 160), (40, 40, 40))),  # Appliances
    (
        ((255, 182, 193), (173, 216, 230), (255, 250, 190), (200, 235, 200)),
        ((255, 120, 160), (120, 170, 255)),
    ),
    (
        ((180, 30, 40), (30, 60, 140), (25, 25, 25), (120, 40, 90)),
        ((240, 240, 240), (230, 200, 60)),
    ),  # Clothes
    (((30, 30, 35), (60, 60, 70), (45, 45, 55)), ((40, 140, 230), (20, 200, 220))),  # Computers
    (((250, 160, 20), (240, 200, 30), (230, 120, 10)), ((20, 20, 20), (90, 90, 90))),  # DIY
    (((230, 150, 200), (190, 150, 220), (220, 190, 120)), ((250, 215, 120), (255, 255, 255))),  # Health
    (((110, 80, 50), (60, 120, 60), (150, 110, 70)), ((200, 170, 120), (40, 80, 40))),  # Home & Garden
    (
        ((200, 40, 40), (40, 90, 200), (230, 190, 40), (40, 150, 90), (20, 20, 20)),
        ((250, 250, 250), (200, 30, 30)),
    ),
    (((40, 50, 80), (120, 120, 125), (200, 190, 170)), ((210, 210, 215), (20, 20, 30))),  # Office
    (((0, 150, 150), (210, 170, 40), (140, 60, 160)), ((240, 240, 240), (20, 100, 100))),  # Other Goods
    (((15, 15, 15), (190, 190, 195), (230, 180, 170)), ((60, 120, 255), (150, 60, 220))),  # Phones
    (((220, 40, 40), (40, 160, 60), (250, 250, 250)), ((20, 20, 20), (250, 220, 40))),  # Sports
    (((20, 20, 20), (240, 240, 240), (110, 40, 170)), ((60, 255, 100), (0, 200, 255))),  # Video Games
)
TEXTURES = (
    "brushed", "dots", "vstripes", "scan", "hazard", "radial", "wood", "hstripes", "grid", "checker",
    "gloss", "rings", "checker",
)  # fmt: skip
N_ROOTS = len(PALETTES)


# --- unit-space shape primitives (the object fits roughly in [-1, 1]^2) ---


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=np.float32)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False, dtype=np.float32)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _star(cx: float, cy: float, r_out: float, r_in: float, points: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 2 * points, endpoint=False, dtype=np.float32) - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, r_out, r_in).astype(np.float32)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _poly(points: list[tuple[float, float]]) -> np.ndarray:
    return np.array(points, dtype=np.float32)


# --- shape families, one per root; `variant` and `rng` give per-product variety ---


def _appliance(variant: int, rng: np.random.Generator) -> list[Shape]:
    if variant == 0:  # washing machine / dryer
        return [
            ("body", _rect(-0.6, -0.8, 0.6, 0.8), None),
            ("dark", _rect(-0.55, -0.75, 0.55, -0.5), None),
            ("accent", _ellipse(0, 0.15, 0.42, 0.42), None),
            ("dark", _ellipse(0, 0.15, 0.3, 0.3), None),
        ]
    return [  # fridge freezer
        ("body", _rect(-0.5, -1.0, 0.5, 1.0), None),
        ("dark", _rect(-0.5, -0.22, 0.5, -0.18), None),
        ("accent", _rect(0.33, -0.75, 0.4, -0.4), None),
        ("accent", _rect(0.33, 0.0, 0.4, 0.5), None),
    ]


def _baby(variant: int, rng: np.random.Generator) -> list[Shape]:
    if variant == 0:  # teddy bear
        return [
            ("body", _ellipse(0, 0.25, 0.6, 0.6), None),
            ("body", _ellipse(-0.5, -0.35, 0.22, 0.22), None),
            ("body", _ellipse(0.5, -0.35, 0.22, 0.22), None),
            ("accent", _ellipse(0, 0.4, 0.2, 0.15), None),
        ]
    shapes: list[Shape] = []
    for _ in range(int(rng.integers(3, 7))):  # balloons / balls
        x, y = rng.uniform(-0.6, 0.6, size=2)
        r = float(rng.uniform(0.18, 0.38))
        shapes.append(("body", _ellipse(float(x), float(y), r, r), None))
    shapes.append(("accent", _poly([(-0.2, 0.9), (0.2, 0.9), (0, 0.55)]), None))
    return shapes


def _clothes(variant: int, rng: np.random.Generator) -> list[Shape]:
    if variant == 0:  # t-shirt
        tee = [(-0.35, -0.8), (-0.85, -0.5), (-0.65, -0.15), (-0.4, -0.32), (-0.4, 0.85), (0.4, 0.85),
               (0.4, -0.32), (0.65, -0.15), (0.85, -0.5), (0.35, -0.8), (0.15, -0.62), (-0.15, -0.62)]  # fmt: skip
        return [("body", _poly(tee), None), ("accent", _ellipse(0, -0.7, 0.16, 0.08), None)]
    if variant == 1:  # dress
        return [
            (
                "body",
                _poly([(-0.25, -0.85), (0.25, -0.85), (0.3, -0.2), (0.7, 0.9), (-0.7, 0.9), (-0.3, -0.2)]),
                None,
            ),
            ("accent", _rect(-0.3, -0.25, 0.3, -0.15), None),
        ]
    return [  # trousers
        (
            "body",
            _poly([(-0.45, -0.9), (0.45, -0.9), (0.5, 0.9), (0.1, 0.9), (0, -0.3), (-0.1, 0.9), (-0.5, 0.9)]),
            None,
        ),
        ("accent", _rect(-0.45, -0.9, 0.45, -0.8), None),
    ]


def _computer(variant: int, rng: np.random.Generator) -> list[Shape]:
    if variant == 0:  # monitor
        return [
            ("body", _rect(-0.95, -0.65, 0.95, 0.45), None),
            ("accent", _rect(-0.85, -0.56, 0.85, 0.36), None),
            ("dark", _poly([(-0.12, 0.45), (0.12, 0.45), (0.2, 0.75), (-0.2, 0.75)]), None),
            ("dark", _rect(-0.45, 0.75, 0.45, 0.85), None),
        ]
    return [  # laptop
        ("body", _poly([(-0.75, -0.7), (0.75, -0.7), (0.75, 0.2), (-0.75, 0.2)]), None),
        ("accent", _rect(-0.66, -0.62, 0.66, 0.12), None),
        ("body", _poly([(-0.75, 0.2), (0.75, 0.2), (0.98, 0.55), (-0.98, 0.55)]), None),
        ("dark", _rect(-0.3, 0.38, 0.3, 0.48), None),
    ]


def _diy(variant: int, rng: np.random.Generator) -> list[Shape]:
    if variant == 0:  # saw blade / teeth
        teeth = [(-0.9, 0.3)]
        for i in range(8):
            x = -0.9 + i * 0.225
            teeth += [(x + 0.11, -0.1), (x + 0.225, 0.3)]
        return [
            ("body", _poly([*teeth, (0.9, 0.6), (-0.9, 0.6)]), None),
            ("accent", _rect(-0.95, 0.55, -0.45, 0.8), None),
        ]
    return [  # drill
        (
            "body",
            _poly(
                [
                    (-0.8, -0.45),
                    (0.5, -0.45),
                    (0.5, 0.05),
                    (0.0, 0.05),
                    (-0.05, 0.85),
                    (-0.45, 0.85),
                    (-0.4, 0.05),
                    (-0.8, 0.05),
                ]
            ),
            None,
        ),
        ("accent", _rect(0.5, -0.3, 0.95, -0.15), None),
        ("dark", _rect(-0.5, 0.65, 0.05, 0.9), None),
    ]


def _health(variant: int, rng: np.random.Generator) -> list[Shape]:
    if variant == 0:  # bottle
        return [
            ("body", _ellipse(0, 0.3, 0.42, 0.6), None),
            ("body", _rect(-0.15, -0.45, 0.15, -0.15), None),
            ("accent", _rect(-0.2, -0.8, 0.2, -0.45), None),
        ]
    return [  # two jars
        ("body", _rect(-0.8, -0.2, -0.1, 0.8), None),
        ("accent", _rect(-0.85, -0.4, -0.05, -0.2), None),
        ("body", _ellipse(0.45, 0.35, 0.35, 0.45), None),
        ("accent", _rect(0.3, -0.3, 0.6, -0.05), None),
    ]


def _home(variant: int, rng: np.random.Generator) -> list[Shape]:
    if variant == 0:  # sofa
        return [
            ("body", _rect(-0.8, -0.45, 0.8, 0.1), None),
            ("body", _rect(-0.95, -0.1, 0.95, 0.45), None),
            ("body", _rect(-1.0, -0.25, -0.75, 0.45), None),
            ("body", _rect(0.75, -0.25, 1.0, 0.45), None),
            ("dark", _rect(-0.85, 0.45, -0.75, 0.6), None),
            ("dark", _rect(0.75, 0.45, 0.85, 0.6), None),
        ]
    if variant == 1:  # table
        return [
            ("body", _rect(-0.95, -0.35, 0.95, -0.2), None),
            ("body", _rect(-0.85, -0.2, -0.72, 0.75), None),
            ("body", _rect(0.72, -0.2, 0.85, 0.75), None),
            ("accent", _rect(-0.5, -0.6, -0.3, -0.35), None),
        ]
    return [  # garden plant
        ("body", _poly([(0, -0.95), (0.7, 0.4), (-0.7, 0.4)]), None),
        ("accent", _rect(-0.12, 0.4, 0.12, 0.7), None),
        ("dark", _poly([(-0.4, 0.7), (0.4, 0.7), (0.3, 0.95), (-0.3, 0.95)]), None),
    ]


def _music(variant: int, rng: np.random.Generator) -> list[Shape]:
    if variant == 0:  # vinyl record
        return [
            ("body", _ellipse(0, 0, 0.85, 0.85, 32), (20, 20, 20)),
            ("accent", _ellipse(0, 0, 0.28, 0.28), None),
            ("dark", _ellipse(0, 0, 0.04, 0.04, 8), None),
        ]
    shapes: list[Shape] = []  # row of book spines, each its own colour
    bodies = PALETTES[7][0]
    x = -0.9
    while x < 0.85:
        width = float(rng.uniform(0.12, 0.3))
        top = float(rng.uniform(-0.85, -0.4))
        colour = bodies[int(rng.integers(len(bodies)))]
        shapes.append(("body", _rect(x, top, x + width, 0.8), colour))
        shapes.append(("accent", _rect(x + 0.02, top + 0.15, x + width - 0.02, top + 0.22), None))
        x += width + 0.02
    return shapes


def _office(variant: int, rng: np.random.Generator) -> list[Shape]:
    if variant == 0:  # filing cabinet
        shapes: list[Shape] = [("body", _rect(-0.5, -0.95, 0.5, 0.95), None)]
        for y in (-0.45, 0.05, 0.5):
            shapes.append(("dark", _rect(-0.5, y - 0.02, 0.5, y + 0.02), None))
            shapes.append(("accent", _rect(-0.15, y - 0.3, 0.15, y - 0.22), None))
        return shapes
    return [  # desk with pedestal
        ("body", _rect(-0.95, -0.4, 0.95, -0.25), None),
        ("body", _rect(0.3, -0.25, 0.9, 0.75), None),
        ("dark", _rect(0.3, 0.2, 0.9, 0.23), None),
        ("body", _rect(-0.9, -0.25, -0.8, 0.75), None),
        ("accent", _rect(0.5, -0.05, 0.7, 0.02), None),
    ]


def _other(variant: int, rng: np.random.Generator) -> list[Shape]:
    if variant == 0:
        points = int(rng.integers(5, 9))
        return [
            ("body", _star(0, 0, 0.9, 0.45, points), None),
            ("accent", _ellipse(0, 0, 0.25, 0.25, 6), None),
        ]
    shapes: list[Shape] = []  # hexagons
    for _ in range(int(rng.integers(2, 5))):
        x, y = rng.uniform(-0.5, 0.5, size=2)
        shapes.append(("body", _ellipse(float(x), float(y), 0.38, 0.38, 6), None))
    shapes.append(("accent", _ellipse(0, 0, 0.15, 0.15, 6), None))
    return shapes


def _phone(variant: int, rng: np.random.Generator) -> list[Shape]:
    def one(cx: float) -> list[Shape]:
        return [
            ("body", _rect(cx - 0.32, -0.8, cx + 0.32, 0.8), None),
            ("accent", _rect(cx - 0.27, -0.66, cx + 0.27, 0.66), None),
            ("dark", _ellipse(cx, -0.73, 0.03, 0.03, 8), None),
        ]

    return one(0.0) if variant == 0 else one(-0.4) + one(0.4)


def _sports(variant: int, rng: np.random.Generator) -> list[Shape]:
    if variant == 0:  # ball
        return [
            ("body", _ellipse(0, 0, 0.75, 0.75, 32), None),
            ("accent", _ellipse(0, 0, 0.2, 0.2, 5), None),
            ("accent", _ellipse(-0.45, -0.35, 0.12, 0.12, 5), None),
            ("accent", _ellipse(0.45, 0.35, 0.12, 0.12, 5), None),
        ]
    return [  # bicycle: ring wheels and a frame
        ("body", _ellipse(-0.55, 0.3, 0.4, 0.4, 28), None),
        ("body", _ellipse(0.55, 0.3, 0.4, 0.4, 28), None),
        ("dark", _ellipse(-0.55, 0.3, 0.3, 0.3, 28), None),
        ("dark", _ellipse(0.55, 0.3, 0.3, 0.3, 28), None),
        (
            "accent",
            _poly(
                [
                    (-0.55, 0.3),
                    (-0.05, 0.3),
                    (0.35, -0.3),
                    (-0.25, -0.3),
                    (-0.25, -0.22),
                    (0.2, -0.22),
                    (-0.1, 0.22),
                    (-0.5, 0.22),
                ]
            ),
            None,
        ),
        ("accent", _rect(0.3, -0.45, 0.45, -0.3), None),
    ]


def _games(variant: int, rng: np.random.Generator) -> list[Shape]:
    if variant == 0:  # controller
        shapes: list[Shape] = [
            ("body", _ellipse(0, 0, 0.85, 0.42), None),
            ("body", _ellipse(-0.55, 0.35, 0.28, 0.38), None),
            ("body", _ellipse(0.55, 0.35, 0.28, 0.38), None),
            ("dark", _rect(-0.62, -0.06, -0.38, 0.02), None),
            ("dark", _rect(-0.54, -0.14, -0.46, 0.1), None),
        ]
        for dx, dy in ((0.5, -0.12), (0.62, 0.0), (0.5, 0.12), (0.38, 0.0)):
            shapes.append(("accent", _ellipse(dx, dy, 0.05, 0.05, 10), None))
        return shapes
    return [  # console box
        ("body", _rect(-0.9, -0.3, 0.9, 0.3), None),
        ("accent", _rect(-0.9, -0.04, 0.9, 0.04), None),
        ("dark", _ellipse(0.7, -0.15, 0.05, 0.05, 10), None),
    ]


SHAPE_FAMILIES: tuple[tuple[Callable[[int, np.random.Generator], list[Shape]], int], ...] = (
    (_appliance, 2), (_baby, 2), (_clothes, 3), (_computer, 2), (_diy, 2), (_health, 2), (_home, 3),
    (_music, 2), (_office, 2), (_other, 2), (_phone, 2), (_sports, 2), (_games, 2),
)  # fmt: skip


@dataclass(frozen=True)
class Look:
    """What every photo of one product has in common."""

    root: int
    variant: int
    body: Colour
    body2: Colour
    accent: Colour
    dark: Colour
    scale: float
    angle: float  # radians
    texture_freq: float
    shape_seed: int


def _jitter(colour: Colour, rng: np.random.Generator, amount: int = 28) -> Colour:
    c = np.clip(np.array(colour) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def product_look(root: int, rng: np.random.Generator) -> Look:
    """Draw a product's visual identity within its root's family."""
    bodies, accents = PALETTES[root]
    i, j = rng.choice(len(bodies), size=2, replace=len(bodies) < 2)
    return Look(
        root=root,
        variant=int(rng.integers(SHAPE_FAMILIES[root][1])),
        body=_jitter(bodies[int(i)], rng),
        body2=_jitter(bodies[int(j)], rng),
        accent=_jitter(accents[int(rng.integers(len(accents)))], rng),
        dark=_jitter((30, 30, 30), rng, 20),
        scale=float(rng.uniform(0.6, 1.0)),
        angle=float(rng.normal(0.0, 0.25)),
        texture_freq=float(rng.uniform(3.0, 8.0)),
        shape_seed=int(rng.integers(2**31)),
    )


def _photo_size(rng: np.random.Generator) -> tuple[int, int]:
    """96-320 px sides; mostly near-square, a few panoramas and tall phone shots."""
    long_side = int(rng.integers(96, 321))
    aspect = float(np.exp(rng.normal(0.0, 0.25)))
    if rng.random() < 0.05:
        aspect = float(rng.uniform(2.2, 3.3)) ** (1 if rng.random() < 0.5 else -1)
    if aspect >= 1:
        w, h = long_side, long_side / aspect
    else:
        w, h = long_side * aspect, long_side
    return int(np.clip(w, 96, 320)), int(np.clip(h, 96, 320))


def _background(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """Solid, gradient or blotchy: a tiny random array bilinearly blown up to size."""
    kind = rng.random()
    grid = (1, 1) if kind < 0.3 else (2, 1) if kind < 0.5 else (1, 2) if kind < 0.7 else (5, 5)
    grey = float(rng.uniform(40, 240))
    mix = float(rng.uniform(0.0, 0.6))  # mostly greyish walls, tables and floors; sometimes vivid
    base = grey * (1 - mix) + rng.integers(0, 256, size=3) * mix
    small = np.clip(base + rng.integers(-45, 46, size=(grid[1], grid[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)


def _texture(name: str, u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    """A pattern in [0, 1] over the object's own (rotated) coordinates."""
    if name == "brushed":
        return 0.5 + 0.5 * np.sin(v * freq * 9.0) * 0.3
    if name == "dots":
        fu, fv = (u * freq) % 1.0 - 0.5, (v * freq) % 1.0 - 0.5
        return (fu * fu + fv * fv < 0.09).astype(np.float32)
    if name == "vstripes":
        return ((u * freq) % 1.0 < 0.5).astype(np.float32)
    if name == "hstripes":
        return ((v * freq) % 1.0 < 0.35).astype(np.float32)
    if name == "scan":
        return ((v * freq * 6.0) % 1.0 < 0.2).astype(np.float32) * 0.6
    if name == "hazard":
        return (((u + v) * freq * 0.7) % 1.0 < 0.5).astype(np.float32)
    if name == "radial":
        return np.clip(np.sqrt(u * u + v * v), 0.0, 1.0)
    if name == "wood":
        return 0.5 + 0.5 * np.sin(v * freq * 4.0 + 2.0 * np.sin(u * 3.0))
    if name == "grid":
        return (((u * freq) % 1.0 < 0.12) | ((v * freq) % 1.0 < 0.12)).astype(np.float32)
    if name == "checker":
        return ((np.floor(u * freq) + np.floor(v * freq)) % 2).astype(np.float32)
    if name == "gloss":
        return np.clip(0.5 + 0.5 * (u - v), 0.0, 1.0)
    if name == "rings":
        return 0.5 + 0.5 * np.sin(np.sqrt(u * u + v * v) * freq * 6.0)
    raise ValueError(f"unknown texture {name!r}")


def make_noise_bank(rng: np.random.Generator, side: int = 320) -> np.ndarray:
    """Gaussian noise (sigma 16, int8) that photos crop from; one bank serves a whole data set."""
    return np.clip(rng.standard_normal((side, side, 3), dtype=np.float32) * 16.0, -127, 127).astype(np.int8)


def render_photo(
    look: Look, rng: np.random.Generator, noise_bank: np.ndarray | None = None
) -> tuple[Image.Image, Image.Image]:
    """One photo of a product: (RGB image, L mask of the object) at a random size."""
    w, h = _photo_size(rng)
    image = _background(w, h, rng)
    draw = ImageDraw.Draw(image)
    side = min(w, h)

    for _ in range(int(rng.integers(0, 3))):  # clutter unrelated to the category
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = side * float(rng.uniform(0.05, 0.15))
        box = [float(cx - r), float(cy - r), float(cx + r), float(cy + r)]
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)

    angle = look.angle + float(rng.normal(0.0, 0.12)) + (math.pi / 2 if rng.random() < 0.08 else 0.0)
    scale = side * 0.45 * look.scale * float(rng.uniform(0.85, 1.15))
    cx = w / 2 + float(rng.uniform(-0.12, 0.12)) * w
    cy = h / 2 + float(rng.uniform(-0.12, 0.12)) * h
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos, sin], [-sin, cos]], dtype=np.float32)

    family, _ = SHAPE_FAMILIES[look.root]
    shapes = family(look.variant, np.random.default_rng(look.shape_seed))

    def to_pixels(points: np.ndarray) -> list[tuple[float, float]]:
        xy = points @ rotation * scale + np.array([cx, cy], dtype=np.float32)
        return [(float(x), float(y)) for x, y in xy]

    mask = Image.new("L", (w, h), 0)
    mask_draw = ImageDraw.Draw(mask)
    for role, points, _ in shapes:
        if role == "body":
            mask_draw.polygon(to_pixels(points), fill=255)

    # texture over the body, in the object's own coordinates so it rotates with it
    ys, xs = np.ogrid[0:h, 0:w]
    dx, dy = (xs - cx) / scale, (ys - cy) / scale
    u = (dx * cos - dy * sin).astype(np.float32)
    v = (dx * sin + dy * cos).astype(np.float32)
    t = _texture(TEXTURES[look.root], u, v, look.texture_freq)
    pattern = Image.fromarray((np.clip(t, 0.0, 1.0) * 153.0).astype(np.uint8))
    image.paste(look.body, (0, 0, w, h), mask)
    image.paste(look.body2, (0, 0, w, h), ImageChops.multiply(mask, pattern))

    colours = {"accent": look.accent, "dark": look.dark}
    for role, points, colour in shapes:  # body parts with their own colour are drawn flat
        if role == "body" and colour is not None:
            draw.polygon(to_pixels(points), fill=colour)
        elif role != "body":
            draw.polygon(to_pixels(points), fill=colour or colours[role])
            mask_draw.polygon(to_pixels(points), fill=255)

    if rng.random() < 0.7:  # sensor noise, cut from a pre-drawn bank: drawing fresh normals is slow
        bank = noise_bank if noise_bank is not None else make_noise_bank(rng, max(w, h))
        y0 = int(rng.integers(0, bank.shape[0] - h + 1))
        x0 = int(rng.integers(0, bank.shape[1] - w + 1))
        sigma16 = int(rng.integers(2, 13))  # noise sigma in pixel levels
        noise = (bank[y0 : y0 + h, x0 : x0 + w].astype(np.int16) * sigma16) >> 4
        pixels = np.asarray(image, dtype=np.int16) + noise
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < 0.1:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.6, 1.5))))
    return image, mask


# --- encodings: how each photo file ends up on disk ---

PHOTO_KINDS = ("jpeg", "L", "RGBA", "P", "CMYK", "exif", "truncated", "empty", "html")
HTML_ERROR = (
    b"<!DOCTYPE html><html><head><title>403 Forbidden</title></head>"
    b"<body><h1>Forbidden</h1><p>You don't have permission to access this resource.</p></body></html>\n"
)


def encode_photo(
    image: Image.Image | None, mask: Image.Image | None, kind: str, rng: np.random.Generator
) -> bytes:
    """The file bytes for `kind` (see PHOTO_KINDS); the name on disk is always .jpg.

    "empty" and "html" need no picture (pass None): nothing of it reaches the file.
    """
    if kind == "empty":
        return b""
    if kind == "html":  # the scraper saved an error page
        return HTML_ERROR
    if image is None or mask is None:
        raise ValueError(f"photo kind {kind!r} needs an image and its mask")
    buffer = io.BytesIO()
    quality = int(rng.integers(60, 93))
    if kind == "jpeg":
        image.save(buffer, "JPEG", quality=quality)
    elif kind == "L":
        image.convert("L").save(buffer, "JPEG", quality=quality)
    elif kind == "CMYK":
        image.convert("CMYK").save(buffer, "JPEG", quality=quality)
    elif kind == "exif":  # stored sideways; EXIF orientation 6 says "rotate to display"
        exif = Image.Exif()
        exif[0x0112] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=quality, exif=exif)
    elif kind == "RGBA":  # cut-out product shot: transparent background, PNG bytes
        background_alpha = int(rng.integers(0, 2)) * 40
        alpha = mask.point(lambda a: 255 if a else background_alpha)
        rgba = image.convert("RGBA")
        rgba.putalpha(alpha)
        rgba.save(buffer, "PNG")
    elif kind == "P":
        colours = int(rng.integers(16, 129))  # fast octree: median cut takes ~0.3 s per noisy photo
        image.quantize(colors=colours, method=Image.Quantize.FASTOCTREE).save(buffer, "PNG")
    elif kind == "truncated":  # download cut off mid-file
        image.save(buffer, "JPEG", quality=quality)
        data = buffer.getvalue()
        return data[: max(64, int(len(data) * float(rng.uniform(0.2, 0.6))))]
    else:
        raise ValueError(f"unknown photo kind {kind!r}; expected one of {PHOTO_KINDS}")
    return buffer.getvalue()
