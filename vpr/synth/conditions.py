"""Photo conditions of the synthetic data: time of day (day, sunset, night), exposure, white balance, fog,
clouds, era, season, transient distractors and sensor noise; everything about one photo that is not the
place."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass
class Condition:
    """Everything about one photo that is not the place: light, era, season, distractors, noise."""

    kind: str  # "day", "sunset" or "night"
    exposure: float
    white_balance: np.ndarray  # (3,)
    sun_left: float  # illumination factor of the left façade (the right one gets the complement)
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    fog: np.ndarray
    fog_dist: float
    clouds: float  # 0..1 cloud cover
    era: int
    season: int  # 0 summer, 1 autumn, 2 winter (bare trees)
    lit_windows: float  # fraction of windows lit at night
    noise: float  # sensor noise std (0..1 scale)
    blur: float  # extra blur radius, px
    cars: int
    pedestrians: int
    occluders: int
    seed: int  # for the per-image random details


def sample_condition(rng: np.random.Generator, kind: str = "day", *, era: int = 0, season: int | None = None,
                     clutter: float = 1.0, variation: float = 1.0) -> Condition:
    """A random photo condition of the given time of day. ``variation`` scales the lighting changes,
    ``clutter`` the number of transient distractors."""
    v = variation
    if kind == "day":
        overcast = rng.random() < 0.35
        exposure = float(np.exp(rng.normal(0, 0.15 * v)))
        wb = np.exp(rng.normal(0, 0.06 * v, size=3))
        sun_left = 0.5 + (0.05 if overcast else 0.3) * rng.uniform(-1, 1)
        if overcast:
            top, horizon = np.array([0.62, 0.64, 0.68]), np.array([0.80, 0.81, 0.83])
        else:
            top, horizon = np.array([0.28, 0.48, 0.85]), np.array([0.72, 0.82, 0.93])
        fog, fog_dist = horizon * 0.95, rng.uniform(90, 220)
        clouds = rng.uniform(0.6, 1.0) if overcast else rng.uniform(0.0, 0.5)
        noise, lit = rng.uniform(0.005, 0.02), 0.0
    elif kind == "sunset":
        exposure = float(np.exp(rng.normal(-0.25, 0.15 * v)))
        wb = np.array([1.15, 0.95, 0.75]) * np.exp(rng.normal(0, 0.05 * v, size=3))
        sun_left = 0.5 + 0.35 * rng.choice([-1.0, 1.0])
        top, horizon = np.array([0.30, 0.30, 0.55]), np.array([0.98, 0.62, 0.35])
        fog, fog_dist = np.array([0.85, 0.60, 0.45]), rng.uniform(70, 150)
        clouds = rng.uniform(0.1, 0.6)
        noise, lit = rng.uniform(0.01, 0.03), rng.uniform(0.05, 0.2)
    elif kind == "night":
        exposure = float(np.exp(rng.normal(0, 0.2 * v)))
        cast = [np.array([1.2, 0.95, 0.65]), np.array([0.85, 0.95, 1.2]), np.array([1.1, 1.0, 0.9])]
        wb = cast[rng.integers(3)] * np.exp(rng.normal(0, 0.05, size=3))
        sun_left = 0.5
        top, horizon = np.array([0.01, 0.015, 0.04]), np.array([0.10, 0.08, 0.10])
        fog, fog_dist = np.array([0.06, 0.05, 0.06]), rng.uniform(50, 110)
        clouds = rng.uniform(0.0, 0.4)
        noise, lit = rng.uniform(0.02, 0.05), rng.uniform(0.2, 0.55)
    else:
        raise ValueError(f"unknown condition kind {kind!r}")
    if season is None:
        season = int(rng.integers(3))
    return Condition(
        kind=kind, exposure=exposure, white_balance=wb, sun_left=float(sun_left), sky_top=top,
        sky_horizon=horizon, fog=fog, fog_dist=float(fog_dist), clouds=float(clouds), era=int(era),
        season=int(season), lit_windows=float(lit), noise=float(noise),
        blur=float(rng.uniform(0.0, 0.6) * v), cars=int(rng.poisson(1.6 * clutter)),
        pedestrians=int(rng.poisson(1.5 * clutter)), occluders=int(rng.random() < 0.12 * clutter),
        seed=int(rng.integers(2**31)),
    )


def vary_condition(cond: Condition, rng: np.random.Generator, *, light: float = 0.0, clutter: float = 1.0
                   ) -> Condition:
    """Another photo taken under (almost) the same conditions: the light changes by ``light`` (0 keeps
    exposure and white balance), the transient distractors and the per-image randomness are new."""
    return replace(
        cond, exposure=float(cond.exposure * np.exp(rng.normal(0, 0.5 * light))),
        white_balance=cond.white_balance * np.exp(rng.normal(0, 0.15 * light, size=3)),
        sun_left=float(np.clip(cond.sun_left + rng.normal(0, light), 0.05, 0.95)),
        cars=int(rng.poisson(1.6 * clutter)), pedestrians=int(rng.poisson(1.5 * clutter)),
        occluders=int(rng.random() < 0.12 * clutter), seed=int(rng.integers(2**31)))
