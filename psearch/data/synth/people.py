"""Synthetic identities: appearance attributes, near-duplicate pairs, and drawing a person.

An identity is plain data (picklable, so worker processes can draw it). ``render_person`` draws
one appearance with OpenCV primitives at its target height, returning an RGB patch and an alpha
mask whose bounding box is the person's full extent (accessories included).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

RGB = tuple[int, int, int]

PALETTE: dict[str, RGB] = {
    "black": (25, 25, 28),
    "white": (225, 225, 220),
    "grey": (120, 120, 125),
    "navy": (30, 40, 95),
    "blue": (40, 90, 190),
    "lightblue": (130, 175, 225),
    "red": (190, 35, 35),
    "maroon": (110, 25, 35),
    "green": (40, 140, 60),
    "olive": (110, 115, 50),
    "yellow": (225, 200, 50),
    "orange": (230, 120, 35),
    "pink": (230, 140, 170),
    "purple": (110, 50, 140),
    "brown": (110, 70, 40),
    "beige": (200, 180, 140),
    "teal": (30, 130, 130),
}
SKIN_TONES: tuple[RGB, ...] = (
    (240, 200, 170),
    (220, 170, 130),
    (180, 130, 95),
    (135, 90, 60),
    (95, 65, 45),
)
HAIR_COLOURS: tuple[RGB, ...] = (
    (20, 15, 12),
    (60, 40, 25),
    (110, 75, 40),
    (190, 160, 100),
    (150, 150, 150),
    (140, 50, 30),
)

PATTERNS = ("solid", "hstripes", "vstripes", "checks", "twotone")
TWO_COLOUR_PATTERNS = PATTERNS[1:]
SLEEVES = ("long", "short")
LOWER_KINDS = ("trousers", "shorts", "skirt")
HAIR_STYLES = ("short", "long", "bald", "ponytail")
HATS = ("none", "cap", "beanie")
BAGS = ("none", "backpack", "shoulder", "handbag")
VIEWS = ("front", "back", "left", "right")
NON_COLOUR_ATTRIBUTES = ("pattern", "bag", "hat", "build", "hair_style")
"""What tells the two identities of a near-duplicate pair apart (their colours are equal)."""


@dataclass(frozen=True)
class Identity:
    """The appearance of one person, fixed across images (cameras change how it looks)."""

    pid: int
    upper: RGB
    upper2: RGB
    pattern: str
    sleeves: str
    lower: RGB
    lower_kind: str
    shoes: RGB
    skin: RGB
    hair: RGB
    hair_style: str
    hat: str
    hat_colour: RGB
    bag: str
    bag_colour: RGB
    build: float
    """Width factor, about 0.82 (slim) to 1.22 (broad)."""
    height: float
    """Height factor around 1.0 (0.88 to 1.12) applied to the perspective height."""
    twin: int = 0
    """pid of the near-duplicate partner, 0 if none."""


def _colour(rng: np.random.Generator, exclude: RGB | None = None) -> RGB:
    """A palette colour with a little per-identity jitter."""
    names = [n for n, c in PALETTE.items() if c != exclude]
    base = np.array(PALETTE[names[rng.integers(len(names))]], dtype=np.int64)
    return tuple(int(v) for v in np.clip(base + rng.integers(-14, 15, 3), 0, 255))


def random_identity(rng: np.random.Generator, pid: int) -> Identity:
    """An identity with independently drawn attributes."""
    upper = _colour(rng)
    bag = BAGS[rng.choice(4, p=(0.45, 0.25, 0.18, 0.12))]
    hat = HATS[rng.choice(3, p=(0.7, 0.18, 0.12))]
    return Identity(
        pid=pid,
        upper=upper,
        upper2=_colour(rng, exclude=upper),
        pattern=PATTERNS[rng.choice(5, p=(0.4, 0.16, 0.12, 0.14, 0.18))],
        sleeves=SLEEVES[rng.integers(2)],
        lower=_colour(rng),
        lower_kind=LOWER_KINDS[rng.choice(3, p=(0.7, 0.15, 0.15))],
        shoes=_colour(rng),
        skin=SKIN_TONES[rng.integers(len(SKIN_TONES))],
        hair=HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))],
        hair_style=HAIR_STYLES[rng.choice(4, p=(0.45, 0.25, 0.1, 0.2))],
        hat=hat,
        hat_colour=_colour(rng),
        bag=bag,
        bag_colour=_colour(rng),
        build=float(rng.uniform(0.82, 1.22)),
        height=float(rng.uniform(0.88, 1.12)),
    )


def near_duplicate(base: Identity, pid: int, rng: np.random.Generator) -> tuple[Identity, Identity]:
    """A pair (base', twin): equal colours everywhere, different in 1-2 non-colour attributes.

    When the pattern differs, both wear two-colour patterns (stripes vs checks vs two-tone), so
    the mean colour of the torso stays about the same.
    """
    changes = rng.choice(NON_COLOUR_ATTRIBUTES, size=rng.integers(1, 3), replace=False)
    twin = {}
    for attribute in changes:
        if attribute == "pattern":
            first, second = rng.choice(TWO_COLOUR_PATTERNS, size=2, replace=False)
            base = dataclasses.replace(base, pattern=str(first))
            twin["pattern"] = str(second)
        elif attribute == "bag":
            twin["bag"] = str(rng.choice([b for b in BAGS if b != base.bag]))
        elif attribute == "hat":
            twin["hat"] = str(rng.choice([h for h in HATS if h != base.hat]))
        elif attribute == "build":
            slim = base.build < 1.02
            twin["build"] = float(base.build + (0.2 if slim else -0.2))
        else:
            twin["hair_style"] = str(rng.choice([h for h in HAIR_STYLES if h != base.hair_style]))
    base = dataclasses.replace(base, twin=pid)
    return base, dataclasses.replace(base, pid=pid, twin=base.pid, **twin)


# --------------------------------------------------------------------------------------------
# drawing

_SHIFT = 3  # fixed-point bits for sub-pixel OpenCV coordinates
_ONE = 1 << _SHIFT


class _Canvas:
    """An RGB patch and its alpha mask, drawn together with anti-aliased OpenCV primitives."""

    def __init__(self, height: int, width: int) -> None:
        self.rgb = np.zeros((height, width, 3), np.uint8)
        self.alpha = np.zeros((height, width), np.uint8)

    def poly(self, points: np.ndarray, colour: RGB) -> None:
        pts = [np.round(np.asarray(points) * _ONE).astype(np.int32)]
        cv2.fillPoly(self.rgb, pts, colour, cv2.LINE_AA, _SHIFT)
        cv2.fillPoly(self.alpha, pts, 255, cv2.LINE_AA, _SHIFT)

    def ellipse(
        self, centre, axes, colour: RGB, angle: float = 0.0, start: float = 0.0, end: float = 360.0
    ) -> None:
        c = tuple(int(round(v * _ONE)) for v in centre)
        a = tuple(max(1, int(round(v * _ONE))) for v in axes)
        cv2.ellipse(self.rgb, c, a, angle, start, end, colour, -1, cv2.LINE_AA, _SHIFT)
        cv2.ellipse(self.alpha, c, a, angle, start, end, 255, -1, cv2.LINE_AA, _SHIFT)

    def line(self, p, q, colour: RGB, thickness: float) -> None:
        p = tuple(int(round(v * _ONE)) for v in p)
        q = tuple(int(round(v * _ONE)) for v in q)
        t = max(1, int(round(thickness)))
        cv2.line(self.rgb, p, q, colour, t, cv2.LINE_AA, _SHIFT)
        cv2.line(self.alpha, p, q, 255, t, cv2.LINE_AA, _SHIFT)

    def patterned_poly(self, points: np.ndarray, ident: Identity, scale: float) -> None:
        """Fill a polygon with the identity's upper-clothing pattern."""
        if ident.pattern == "solid":
            self.poly(points, ident.upper)
            return
        mask = np.zeros(self.alpha.shape, np.uint8)
        pts = [np.round(np.asarray(points) * _ONE).astype(np.int32)]
        cv2.fillPoly(mask, pts, 1, cv2.LINE_8, _SHIFT)
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            return
        period = max(2.0, 0.05 * scale)
        rows = (ys // (period / 2)).astype(np.int64) % 2
        cols = (xs // (period / 2)).astype(np.int64) % 2
        if ident.pattern == "hstripes":
            second = rows == 1
        elif ident.pattern == "vstripes":
            second = cols == 1
        elif ident.pattern == "checks":
            second = (rows ^ cols) == 1
        else:  # twotone: a different colour below the chest
            second = ys >= ys.min() + 0.45 * (ys.max() - ys.min())
        self.rgb[ys, xs] = np.where(second[:, None], ident.upper2, ident.upper)
        self.alpha[ys, xs] = 255
        cv2.fillPoly(self.alpha, pts, 255, cv2.LINE_AA, _SHIFT)


def _limb(top, bottom, width: float) -> np.ndarray:
    """A quadrilateral of ``width`` from point ``top`` to point ``bottom``."""
    top, bottom = np.asarray(top, float), np.asarray(bottom, float)
    d = bottom - top
    n = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-6) * width / 2
    return np.array([top + n, bottom + n, bottom - n, top - n])


def render_person(
    ident: Identity, view: str, height: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``ident`` seen from ``view`` ("front", "back", "left", "right"), ``height`` px tall.

    Returns rgb uint8 [h, w, 3] and alpha uint8 [h, w]; the feet touch the bottom row, centred
    horizontally. Backpacks show from the back and side (only straps from the front).
    """
    H = float(height)
    W = int(np.ceil(H * 0.8)) | 1
    canvas = _Canvas(int(np.ceil(H)) + 2, W)
    cx, b = W / 2.0, ident.build
    side = view in ("left", "right")
    stride = rng.uniform(0.0, 0.32) if side else rng.uniform(0.0, 0.08)
    swing = rng.uniform(-0.25, 0.25)

    y_shoulder, y_hip, y_foot = 0.15 * H, 0.50 * H, 0.97 * H
    sw = (0.13 if side else 0.25) * H * b  # shoulder width
    hw = (0.12 if side else 0.21) * H * b  # hip width
    leg_w, arm_w = 0.085 * H * b, 0.06 * H * b
    head_c, head_a = (cx, 0.075 * H), (0.05 * H, 0.066 * H)

    def draw_bag_behind() -> None:  # side view: backpack sticks out behind the back (left)
        if ident.bag == "backpack" and side:
            x0 = cx - sw / 2 - 0.09 * H
            canvas.poly(
                np.array(
                    [
                        [x0, y_shoulder + 0.02 * H],
                        [cx, y_shoulder + 0.02 * H],
                        [cx, 0.45 * H],
                        [x0 + 0.01 * H, 0.45 * H],
                    ]
                ),
                ident.bag_colour,
            )

    def draw_legs() -> None:
        hips = [(cx - (0 if side else hw / 4), y_hip), (cx + (0 if side else hw / 4), y_hip)]
        offsets = [-stride * H, stride * H]
        for (hx, hy), dx in zip(hips, offsets, strict=True):
            foot = (hx + dx * 0.6, y_foot)
            skin_from = {"trousers": None, "shorts": 0.66, "skirt": 0.68}[ident.lower_kind]
            canvas.poly(_limb((hx, hy), foot, leg_w), ident.lower)
            if skin_from is not None:
                t = (skin_from * H - hy) / (y_foot - hy)
                start = (hx + (foot[0] - hx) * t, skin_from * H)
                canvas.poly(_limb(start, foot, leg_w * 0.8), ident.skin)
            toe = 0.03 * H if side else 0.0  # drawn facing right; "left" is mirrored
            shoe = (0.055 * H if side else 0.04 * H, 0.025 * H)
            canvas.ellipse((foot[0] + toe, y_foot), shoe, ident.shoes)
        if ident.lower_kind == "skirt":
            canvas.poly(
                np.array(
                    [
                        [cx - hw / 2, y_hip - 0.02 * H],
                        [cx + hw / 2, y_hip - 0.02 * H],
                        [cx + hw * 0.75, 0.68 * H],
                        [cx - hw * 0.75, 0.68 * H],
                    ]
                ),
                ident.lower,
            )

    def draw_arm(x_shoulder: float, direction: float, phase: float) -> None:
        hand = (x_shoulder + direction * 0.03 * H + phase * H * (0.5 if side else 0.1), 0.52 * H)
        canvas.poly(_limb((x_shoulder, y_shoulder + 0.02 * H), hand, arm_w), ident.upper)
        if ident.sleeves == "short":
            t = 0.4
            elbow = (
                x_shoulder + (hand[0] - x_shoulder) * t,
                y_shoulder + (hand[1] - y_shoulder) * t,
            )
            canvas.poly(_limb(elbow, hand, arm_w * 0.8), ident.skin)
        canvas.ellipse(hand, (arm_w * 0.55, arm_w * 0.6), ident.skin)
        if ident.bag == "handbag" and direction > 0 and view != "left":
            canvas.line(hand, (hand[0], hand[1] + 0.05 * H), ident.bag_colour, max(1, 0.01 * H))
            canvas.poly(
                np.array(
                    [
                        [hand[0] - 0.05 * H, hand[1] + 0.04 * H],
                        [hand[0] + 0.05 * H, hand[1] + 0.04 * H],
                        [hand[0] + 0.06 * H, hand[1] + 0.14 * H],
                        [hand[0] - 0.06 * H, hand[1] + 0.14 * H],
                    ]
                ),
                ident.bag_colour,
            )

    def draw_torso() -> None:
        canvas.patterned_poly(
            np.array(
                [
                    [cx - sw / 2, y_shoulder],
                    [cx + sw / 2, y_shoulder],
                    [cx + hw / 2, y_hip + 0.01 * H],
                    [cx - hw / 2, y_hip + 0.01 * H],
                ]
            ),
            ident,
            H,
        )

    def draw_long_hair(bottom_half_width: float, bottom_y: float) -> None:
        """The hair that falls below the head: a trapezoid from the head's centre line down."""
        top = head_a[0] * 1.1
        canvas.poly(
            np.array(
                [
                    [cx - top, head_c[1]],
                    [cx + top, head_c[1]],
                    [cx + bottom_half_width, bottom_y],
                    [cx - bottom_half_width, bottom_y],
                ]
            ),
            ident.hair,
        )

    def draw_head() -> None:
        if ident.hair_style == "long" and view != "back":
            draw_long_hair(head_a[0] * 1.1, 0.2 * H)
        canvas.ellipse(head_c, head_a, ident.skin)
        if ident.hair_style != "bald":
            if view == "back":
                canvas.ellipse(head_c, (head_a[0] * 1.05, head_a[1] * 1.02), ident.hair)
                if ident.hair_style == "long":
                    draw_long_hair(head_a[0] * 1.0, 0.22 * H)
            elif side:
                canvas.ellipse(
                    head_c, (head_a[0] * 1.05, head_a[1] * 1.02), ident.hair, start=90, end=300
                )
            else:
                canvas.ellipse(
                    head_c, (head_a[0] * 1.05, head_a[1] * 1.02), ident.hair, start=180, end=360
                )
            if ident.hair_style == "ponytail" and view != "front":
                tail_x = cx - head_a[0] * 1.2 if side else cx
                canvas.ellipse((tail_x, head_c[1] + 0.05 * H), (0.02 * H, 0.045 * H), ident.hair)
        if ident.hat == "cap":
            canvas.ellipse(
                head_c, (head_a[0] * 1.1, head_a[1] * 0.95), ident.hat_colour, start=180, end=360
            )
            brim = 0.06 * H if side else 0.0
            canvas.ellipse(
                (cx + brim, head_c[1] - 0.005 * H),
                (head_a[0] * (1.2 if side else 1.15), 0.012 * H),
                ident.hat_colour,
            )
        elif ident.hat == "beanie":
            canvas.ellipse(
                (cx, head_c[1] - 0.015 * H),
                (head_a[0] * 1.12, head_a[1] * 0.9),
                ident.hat_colour,
                start=180,
                end=360,
            )

    def draw_bag_front() -> None:
        if ident.bag == "backpack":
            if view == "back":
                canvas.poly(
                    np.array(
                        [
                            [cx - sw * 0.38, y_shoulder + 0.03 * H],
                            [cx + sw * 0.38, y_shoulder + 0.03 * H],
                            [cx + sw * 0.36, 0.44 * H],
                            [cx - sw * 0.36, 0.44 * H],
                        ]
                    ),
                    ident.bag_colour,
                )
            elif view == "front":
                for s in (-1, 1):
                    canvas.line(
                        (cx + s * sw * 0.3, y_shoulder),
                        (cx + s * sw * 0.28, 0.36 * H),
                        ident.bag_colour,
                        max(1, 0.018 * H),
                    )
        elif ident.bag == "shoulder":
            canvas.line(
                (cx - sw * 0.45, y_shoulder),
                (cx + hw * 0.55, 0.44 * H),
                ident.bag_colour,
                max(1, 0.015 * H),
            )
            if view != "left":
                x0 = cx + hw * 0.4
                canvas.poly(
                    np.array(
                        [
                            [x0, 0.42 * H],
                            [x0 + 0.11 * H, 0.42 * H],
                            [x0 + 0.11 * H, 0.53 * H],
                            [x0, 0.53 * H],
                        ]
                    ),
                    ident.bag_colour,
                )

    draw_bag_behind()
    draw_legs()
    if side:
        draw_arm(cx, -1, -swing)
        draw_torso()
        draw_head()
        draw_bag_front()
        draw_arm(cx, 1, swing)
    else:
        for direction in (-1, 1):
            draw_arm(cx + direction * sw / 2 * 0.95, direction, 0.0)
        draw_torso()
        draw_bag_front()
        draw_head()
    rgb, alpha = canvas.rgb, canvas.alpha
    if view == "left":  # drawn facing right; mirror
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    return np.ascontiguousarray(rgb), np.ascontiguousarray(alpha)
