"""Cameras, street backgrounds, street furniture and the camera's imaging effects.

A camera fixes a background (buildings, pavement), a ground-plane perspective (how tall a person
standing at image row y is), and its imaging: illumination gain, colour cast, gamma, blur and
noise. Props (lamp posts, bollards, poles with round tops, mannequins, trees, cars...) are drawn
per image at their depth, interleaved with the people, so they occlude and are occluded.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

AA = cv2.LINE_AA

SKIES = ((200, 215, 235), (185, 190, 200), (225, 205, 170), (150, 170, 200))
WALLS = (
    (170, 150, 130),
    (190, 185, 175),
    (140, 120, 110),
    (120, 125, 135),
    (205, 195, 160),
    (150, 160, 150),
    (175, 110, 90),
    (95, 95, 100),
)
GROUNDS = ((110, 110, 112), (160, 150, 135), (150, 100, 85), (95, 100, 90), (175, 170, 160))


@dataclass(frozen=True)
class Camera:
    """One camera: imaging parameters and the ground-plane perspective of its view."""

    index: int
    """1-based camera number (PRW names frames c<index>s...)."""
    seed: int
    gain: float
    cast: tuple[float, float, float]
    gamma: float
    blur: float
    """Gaussian blur sigma in pixels (0: sharp)."""
    noise: float
    """Standard deviation of additive noise, in 0-255 units."""
    horizon: float
    """Image row (fraction of the height) where the walkable ground starts."""
    far: float
    near: float
    """Position in the configured person-height range at the horizon (far) and bottom (near)."""

    def person_height(
        self, foot_y: np.ndarray | float, image_h: int, height_range: tuple[float, float]
    ) -> np.ndarray:
        """Height in px of a person whose feet are at row ``foot_y`` (before identity height)."""
        top = self.horizon * image_h
        t = np.clip((np.asarray(foot_y, float) - top) / (image_h - top), 0.0, 1.25)
        position = self.far + t * (self.near - self.far)
        return height_range[0] + position * (height_range[1] - height_range[0])


def make_cameras(n: int, seed: int) -> list[Camera]:
    """``n`` cameras with distinct illumination, colour cast, blur, noise and scale."""
    rng = np.random.default_rng([seed, 7919])
    cameras = []
    for index in range(1, n + 1):
        cameras.append(
            Camera(
                index=index,
                seed=int(rng.integers(2**31)),
                gain=float(rng.uniform(0.85, 1.12)),
                cast=tuple(float(v) for v in rng.uniform(0.91, 1.09, 3)),
                gamma=float(rng.uniform(0.9, 1.12)),
                blur=float(rng.choice([0.0, 0.5, 0.8, 1.2])),
                noise=float(rng.uniform(1.5, 7.0)),
                horizon=float(rng.uniform(0.22, 0.45)),
                far=float(rng.uniform(0.0, 0.12)),
                near=float(rng.uniform(0.8, 1.0)),
            )
        )
    return cameras


def _smooth_field(
    rng: np.random.Generator, size: tuple[int, int], cells: int, amplitude: float
) -> np.ndarray:
    """A float32 [h, w] low-frequency multiplicative texture around 1."""
    w, h = size
    small = rng.uniform(1 - amplitude, 1 + amplitude, (cells, cells + 2)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@functools.lru_cache(maxsize=16)
def camera_background(camera: Camera, size: tuple[int, int]) -> np.ndarray:
    """The fixed background of ``camera``: RGB uint8 [h, w, 3] (sky, facades, pavement)."""
    w, h = size
    rng = np.random.default_rng(camera.seed)
    img = np.empty((h, w, 3), np.uint8)
    horizon = int(camera.horizon * h)
    sky = np.array(SKIES[rng.integers(len(SKIES))], np.float32)
    img[:horizon] = (sky * np.linspace(0.9, 1.05, horizon)[:, None, None]).clip(0, 255)

    x = 0
    while x < w:  # facades with windows and shop fronts
        bw = int(rng.uniform(0.15, 0.4) * w)
        top = int(rng.uniform(0.0, 0.5) * horizon)
        wall = np.array(WALLS[rng.integers(len(WALLS))]) + rng.integers(-15, 16, 3)
        cv2.rectangle(img, (x, top), (x + bw, horizon), wall.clip(0, 255).tolist(), -1)
        win_w, win_h = max(3, int(rng.uniform(0.03, 0.06) * w)), max(3, int(0.05 * h))
        glass = (np.array((60, 75, 95)) + rng.integers(-20, 20, 3)).tolist()
        for wy in range(top + win_h // 2, horizon - 2 * win_h, int(win_h * 1.8)):
            for wx in range(x + win_w // 2, x + bw - win_w, int(win_w * 1.7)):
                cv2.rectangle(img, (wx, wy), (wx + win_w, wy + win_h), glass, -1)
        if rng.random() < 0.6:  # shop front
            sign = (np.array((200, 60, 50)) * rng.uniform(0.4, 1.2, 3)).clip(0, 255).tolist()
            cv2.rectangle(
                img, (x + 3, horizon - int(1.6 * win_h)), (x + bw - 3, horizon), glass, -1
            )
            cv2.rectangle(
                img,
                (x + 3, horizon - int(2.1 * win_h)),
                (x + bw - 3, horizon - int(1.6 * win_h)),
                sign,
                -1,
            )
        x += bw

    ground = np.array(GROUNDS[rng.integers(len(GROUNDS))], np.float32)
    img[horizon:] = ground
    line = (ground * 0.8).tolist()
    vanish_x = rng.uniform(0.2, 0.8) * w
    for k in range(-12, 13):  # paving joints converging to a vanishing point
        cv2.line(
            img,
            (int(vanish_x + k * w * 0.02), horizon),
            (int(vanish_x + k * w * 0.25), h),
            line,
            1,
            AA,
        )
    y, step = float(horizon), 4.0
    while y < h:
        cv2.line(img, (0, int(y)), (w, int(y)), line, 1, AA)
        step *= 1.35
        y += step
    if rng.random() < 0.5:  # kerb
        ky = int(horizon + rng.uniform(0.05, 0.2) * (h - horizon))
        cv2.rectangle(img, (0, ky), (w, ky + max(2, h // 80)), (185, 185, 180), -1)

    shade = _smooth_field(rng, size, 5, 0.12) * _smooth_field(rng, size, 40, 0.04)
    return (img * shade[..., None]).clip(0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# props: street furniture and person-like clutter, drawn at the scale of their depth

Prop = Callable[[np.ndarray, float, float, float, np.random.Generator], None]
"""draw(image, x, base_y, person_height_there, rng): draws standing on (x, base_y)."""
PROP_EXTENT = (1.5, 2.6)
"""Every prop stays within x +- 1.5 s and rows base_y - 2.6 s .. base_y + 1 (s: its scale)."""


def _c(rgb) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


def _lamp_post(img, x, y, s, rng) -> None:
    metal = _c(np.array((60, 65, 70)) + rng.integers(-20, 40))
    top = y - s * rng.uniform(1.6, 2.4)
    cv2.rectangle(img, (int(x - s * 0.025), int(top)), (int(x + s * 0.025), int(y)), metal, -1)
    cv2.circle(img, (int(x), int(top)), max(2, int(s * 0.08)), _c((235, 230, 200)), -1, AA)


def ground_shadow(img: np.ndarray, x: float, y: float, half_width: float, s: float) -> None:
    """The soft dark ellipse under something standing at (x, y); people and look-alikes get one."""
    axes = (max(2, int(half_width)), max(1, int(s / 30)))
    cv2.ellipse(img, (int(x), int(y)), axes, 0, 0, 360, (40, 40, 40), -1, AA)


def _round_top_pole(img, x, y, s, rng) -> None:
    """A person-height post with a ball on top: a classic false positive."""
    colour = _c(rng.integers(30, 200, 3))
    ground_shadow(img, x, y, 0.15 * s, s)
    top = y - s * rng.uniform(0.8, 1.05)
    cv2.rectangle(img, (int(x - s * 0.04), int(top)), (int(x + s * 0.04), int(y)), colour, -1)
    cv2.circle(img, (int(x), int(top)), max(2, int(s * 0.065)), colour, -1, AA)


def _bollard(img, x, y, s, rng) -> None:
    colour = _c(rng.choice([(50, 50, 55), (200, 200, 195), (180, 150, 40)]))
    top = y - s * 0.35
    cv2.rectangle(img, (int(x - s * 0.05), int(top)), (int(x + s * 0.05), int(y)), colour, -1)
    cv2.ellipse(
        img,
        (int(x), int(top)),
        (max(1, int(s * 0.05)), max(1, int(s * 0.03))),
        0,
        180,
        360,
        colour,
        -1,
        AA,
    )


def _mannequin(img, x, y, s, rng) -> None:
    """A flat-coloured human silhouette (statue, cut-out, dummy): person-shaped, not a person."""
    colour = _c(
        rng.choice([(200, 200, 200), (90, 70, 50), (40, 40, 40), (170, 140, 90)])
        + rng.integers(-15, 16, 3)
    )
    h = s * rng.uniform(0.85, 1.05)
    top = y - h
    ground_shadow(img, x, y, 0.3 * h, h)
    cv2.ellipse(
        img,
        (int(x), int(top + 0.07 * h)),
        (max(1, int(0.05 * h)), max(1, int(0.065 * h))),
        0,
        0,
        360,
        colour,
        -1,
        AA,
    )
    body = np.array(
        [
            [x - 0.12 * h, top + 0.15 * h],
            [x + 0.12 * h, top + 0.15 * h],
            [x + 0.09 * h, top + 0.55 * h],
            [x + 0.07 * h, y],
            [x - 0.07 * h, y],
            [x - 0.09 * h, top + 0.55 * h],
        ],
        np.int32,
    )
    cv2.fillPoly(img, [body], colour, AA)


def _bin(img, x, y, s, rng) -> None:
    colour = _c(rng.choice([(40, 90, 50), (60, 60, 65), (150, 110, 60)]))
    cv2.rectangle(
        img, (int(x - s * 0.12), int(y - s * 0.45)), (int(x + s * 0.12), int(y)), colour, -1
    )
    cv2.rectangle(
        img,
        (int(x - s * 0.14), int(y - s * 0.5)),
        (int(x + s * 0.14), int(y - s * 0.44)),
        _c(np.array(colour) * 0.7),
        -1,
    )


def _tree(img, x, y, s, rng) -> None:
    cv2.rectangle(
        img,
        (int(x - s * 0.05), int(y - s * 1.3)),
        (int(x + s * 0.05), int(y)),
        _c((80, 60, 40)),
        -1,
    )
    green = np.array((50, 110, 45)) * rng.uniform(0.7, 1.3)
    for _ in range(3):
        c = (int(x + rng.uniform(-0.3, 0.3) * s), int(y - s * rng.uniform(1.4, 1.9)))
        cv2.ellipse(
            img,
            c,
            (max(2, int(s * rng.uniform(0.3, 0.5))),) * 2,
            0,
            0,
            360,
            _c(green * rng.uniform(0.8, 1.2)),
            -1,
            AA,
        )


def _sign(img, x, y, s, rng) -> None:
    top = y - s * 1.3
    cv2.line(img, (int(x), int(top)), (int(x), int(y)), _c((120, 120, 125)), max(1, int(s * 0.03)))
    colour = _c(rng.choice([(200, 40, 40), (40, 80, 190), (230, 200, 40)]))
    if rng.random() < 0.5:
        cv2.circle(img, (int(x), int(top)), max(2, int(s * 0.12)), colour, -1, AA)
    else:
        cv2.rectangle(
            img,
            (int(x - s * 0.15), int(top - s * 0.1)),
            (int(x + s * 0.15), int(top + s * 0.12)),
            colour,
            -1,
        )


def _bench(img, x, y, s, rng) -> None:
    wood = _c(np.array((130, 90, 50)) * rng.uniform(0.7, 1.2))
    cv2.rectangle(
        img, (int(x - s * 0.4), int(y - s * 0.28)), (int(x + s * 0.4), int(y - s * 0.22)), wood, -1
    )
    cv2.rectangle(
        img, (int(x - s * 0.4), int(y - s * 0.5)), (int(x + s * 0.4), int(y - s * 0.42)), wood, -1
    )
    for dx in (-0.35, 0.35):
        cv2.rectangle(
            img,
            (int(x + dx * s - 1), int(y - s * 0.25)),
            (int(x + dx * s + 1), int(y)),
            _c((50, 50, 50)),
            -1,
        )


def _car(img, x, y, s, rng) -> None:
    """A parked car: a wide, low occluder."""
    paint = _c(rng.integers(20, 230, 3))
    w, h = s * rng.uniform(1.4, 1.9), s * 0.55
    body = np.array(
        [
            [x - w / 2, y - h * 0.15],
            [x - w / 2, y - h * 0.55],
            [x - w * 0.3, y - h * 0.6],
            [x - w * 0.2, y - h],
            [x + w * 0.25, y - h],
            [x + w * 0.35, y - h * 0.6],
            [x + w / 2, y - h * 0.55],
            [x + w / 2, y - h * 0.15],
        ],
        np.int32,
    )
    cv2.fillPoly(img, [body], paint, AA)
    cv2.fillPoly(
        img,
        [
            np.array(
                [
                    [x - w * 0.17, y - h * 0.93],
                    [x + w * 0.22, y - h * 0.93],
                    [x + w * 0.3, y - h * 0.62],
                    [x - w * 0.26, y - h * 0.62],
                ],
                np.int32,
            )
        ],
        _c((60, 75, 95)),
        AA,
    )
    for dx in (-0.3, 0.3):
        cv2.circle(
            img,
            (int(x + dx * w), int(y - h * 0.15)),
            max(2, int(h * 0.17)),
            _c((20, 20, 20)),
            -1,
            AA,
        )


def _bicycle(img, x, y, s, rng) -> None:
    colour = _c(rng.integers(20, 230, 3))
    r = max(2, int(s * 0.17))
    for dx in (-0.25, 0.25):
        cv2.circle(img, (int(x + dx * s), int(y - r)), r, _c((30, 30, 30)), max(1, r // 6), AA)
    pts = np.array(
        [
            [x - 0.25 * s, y - r],
            [x, y - r],
            [x + 0.25 * s, y - r],
            [x + 0.05 * s, y - r * 2.4],
            [x - 0.1 * s, y - r * 2.4],
        ],
        np.int32,
    )
    cv2.polylines(img, [pts], True, colour, max(1, r // 5), AA)


PROPS: dict[str, tuple[Prop, float]] = {
    "lamp_post": (_lamp_post, 1.0),
    "round_top_pole": (_round_top_pole, 1.2),
    "bollard": (_bollard, 1.0),
    "mannequin": (_mannequin, 0.7),
    "bin": (_bin, 0.8),
    "tree": (_tree, 0.6),
    "sign": (_sign, 0.7),
    "bench": (_bench, 0.6),
    "car": (_car, 0.5),
    "bicycle": (_bicycle, 0.6),
}
"""Prop name -> (draw function, relative frequency)."""


def random_prop(rng: np.random.Generator) -> Prop:
    """A prop's draw function, drawn by frequency."""
    weights = np.array([f for _, f in PROPS.values()])
    return list(PROPS.values())[rng.choice(len(PROPS), p=weights / weights.sum())][0]


NOISE_MARGIN = 32


@functools.lru_cache(maxsize=16)
def _noise_field(camera: Camera, size: tuple[int, int]) -> np.ndarray:
    """The camera's sensor noise, int16 [h + margin, w + margin, 3]; images use shifted crops."""
    w, h = size
    rng = np.random.default_rng([camera.seed, 1])
    noise = rng.standard_normal((h + NOISE_MARGIN, w + NOISE_MARGIN, 3)) * camera.noise
    return np.rint(noise).astype(np.int16)


def apply_camera(image: np.ndarray, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """The camera's imaging of a rendered scene: gain and colour cast, gamma, blur, noise.

    image: RGB uint8 [h, w, 3] -> RGB uint8 [h, w, 3]. A small per-image light change is added.
    """
    h, w = image.shape[:2]
    gain = np.asarray(camera.cast) * camera.gain * rng.uniform(0.9, 1.1)  # [3]
    levels = np.clip(np.arange(256)[:, None] / 255.0 * gain, 0.0, 1.0) ** camera.gamma
    lut = np.rint(levels * 255.0).astype(np.uint8).reshape(1, 256, 3)
    x = cv2.LUT(image, lut)
    if camera.blur > 0:
        x = cv2.GaussianBlur(x, (0, 0), camera.blur)
    dy, dx = rng.integers(0, NOISE_MARGIN, 2)
    noisy = x.astype(np.int16) + _noise_field(camera, (w, h))[dy : dy + h, dx : dx + w]
    return np.clip(noisy, 0, 255).astype(np.uint8)
