"""Per-town look: sky, sun, fog, surface colours and palettes (all RGB floats in [0, 1])."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VEHICLE_COLOURS = np.array(
    [
        [0.85, 0.85, 0.86],
        [0.08, 0.08, 0.09],
        [0.45, 0.46, 0.48],
        [0.70, 0.71, 0.73],
        [0.55, 0.06, 0.06],
        [0.08, 0.18, 0.45],
        [0.10, 0.30, 0.15],
        [0.80, 0.65, 0.10],
        [0.95, 0.95, 0.93],
        [0.35, 0.20, 0.12],
        [0.20, 0.45, 0.70],
        [0.90, 0.40, 0.05],
    ]
)


@dataclass(frozen=True)
class Style:
    """Colours and lighting of one town."""

    sky_zenith: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    sun_dir: tuple[float, float, float]  # unit vector towards the sun, world frame
    sun_colour: tuple[float, float, float]
    ambient: tuple[float, float, float]
    fog_density: float  # per metre
    asphalt: tuple[float, float, float]
    marking_white: tuple[float, float, float]
    marking_yellow: tuple[float, float, float]
    sidewalk: tuple[float, float, float]
    kerb: tuple[float, float, float]
    grass: tuple[float, float, float]
    building_palette: tuple[tuple[float, float, float], ...]
    roof: tuple[float, float, float]
    window: tuple[float, float, float]
    foliage: tuple[float, float, float]
    trunk: tuple[float, float, float]
    pole: tuple[float, float, float]
    building_height: tuple[float, float]
    tree_prob: float


def _jitter(rng: np.random.Generator, colour, amount: float = 0.04) -> tuple[float, float, float]:
    c = np.clip(np.asarray(colour) + rng.uniform(-amount, amount, size=3), 0.0, 1.0)
    return tuple(float(v) for v in c)


def random_style(rng: np.random.Generator) -> Style:
    """Draw a town look: clear day, overcast or low evening sun, and its own surface colours."""
    mood = rng.choice(["clear", "overcast", "evening"], p=[0.5, 0.3, 0.2])
    az = rng.uniform(0, 2 * np.pi)
    if mood == "clear":
        elev = rng.uniform(np.radians(30), np.radians(70))
        zenith, horizon = _jitter(rng, (0.25, 0.45, 0.80)), _jitter(rng, (0.70, 0.80, 0.92))
        sun, ambient, fog = (1.0, 0.97, 0.90), (0.42, 0.45, 0.52), rng.uniform(0.002, 0.005)
    elif mood == "overcast":
        elev = rng.uniform(np.radians(40), np.radians(80))
        grey = rng.uniform(0.6, 0.78)
        zenith, horizon = _jitter(rng, (grey - 0.08,) * 3, 0.02), _jitter(rng, (grey + 0.08,) * 3, 0.02)
        sun, ambient, fog = (0.45, 0.45, 0.47), (0.62, 0.63, 0.66), rng.uniform(0.004, 0.009)
    else:
        elev = rng.uniform(np.radians(8), np.radians(20))
        zenith, horizon = _jitter(rng, (0.22, 0.30, 0.55)), _jitter(rng, (0.95, 0.70, 0.45))
        sun, ambient, fog = (1.0, 0.72, 0.45), (0.32, 0.32, 0.40), rng.uniform(0.003, 0.006)
    sun_dir = (float(np.cos(elev) * np.cos(az)), float(np.cos(elev) * np.sin(az)), float(np.sin(elev)))
    g = rng.uniform(0.22, 0.38)
    palette = tuple(
        _jitter(rng, c, 0.06)
        for c in rng.choice(
            np.array(
                [
                    [0.75, 0.70, 0.62],
                    [0.62, 0.35, 0.28],
                    [0.80, 0.78, 0.74],
                    [0.55, 0.55, 0.58],
                    [0.85, 0.80, 0.65],
                    [0.45, 0.40, 0.36],
                    [0.70, 0.60, 0.50],
                    [0.60, 0.65, 0.70],
                ]
            ),
            size=5,
            replace=False,
        )
    )
    low, high = [(4.0, 12.0), (6.0, 25.0), (10.0, 45.0)][int(rng.integers(3))]
    return Style(
        sky_zenith=zenith,
        sky_horizon=horizon,
        sun_dir=sun_dir,
        sun_colour=sun,
        ambient=ambient,
        fog_density=float(fog),
        asphalt=_jitter(rng, (g, g, g + 0.01), 0.015),
        marking_white=(0.92, 0.92, 0.90),
        marking_yellow=_jitter(rng, (0.90, 0.72, 0.15), 0.03),
        sidewalk=_jitter(rng, (0.62, 0.60, 0.57)),
        kerb=(0.72, 0.72, 0.70),
        grass=_jitter(rng, (0.30, 0.45, 0.18), 0.05),
        building_palette=palette,
        roof=_jitter(rng, (0.30, 0.28, 0.27)),
        window=_jitter(rng, (0.20, 0.26, 0.33), 0.03),
        foliage=_jitter(rng, (0.18, 0.38, 0.12), 0.05),
        trunk=(0.30, 0.22, 0.15),
        pole=(0.40, 0.41, 0.43),
        building_height=(low, high),
        tree_prob=float(rng.uniform(0.3, 0.9)),
    )
