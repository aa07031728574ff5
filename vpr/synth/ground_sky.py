"""Ground and sky shading: asphalt, sidewalk tiles, kerbs, center line and zebra crossings; the sky gradient
with clouds."""

from __future__ import annotations

import numpy as np

from vpr.synth.conditions import Condition
from vpr.synth.numerics import F32, bilerp, mix_into, rgb
from vpr.synth.world import Street


def shade_ground(street: Street, gx: np.ndarray, gy: np.ndarray, rg: np.ndarray) -> np.ndarray:
    hw, sw = street.half_width, street.style.sidewalk
    aa = np.clip(1.7 - rg / F32(25.0), 0.1, 1.0).astype(F32)
    noise = bilerp(street.ground, gy + F32(hw), gx - F32(street.t_lo))
    road = np.abs(gy) < hw - sw
    col = np.empty((gx.size, 3), dtype=F32)
    col[:] = ((0.58 + 0.04 * noise)[:, None] * rgb(1.0, 0.98, 0.94))
    ri = np.flatnonzero(road)
    col[ri] = (0.30 + 0.05 * noise[ri])[:, None] * rgb(1.0, 1.0, 1.03)
    pi = np.flatnonzero(~road)
    tiles = pi[(np.mod(gx[pi], F32(1.2)) < 0.06) | (np.mod(gy[pi], F32(1.2)) < 0.06)]
    col[tiles] *= (1 - 0.25 * aa[tiles])[:, None]
    col[np.abs(np.abs(gy) - F32(hw - sw)) < 0.18] = rgb(0.72, 0.72, 0.70)
    gxr, gyr = gx[ri], gy[ri]
    center = ri[(np.abs(gyr) < 0.12) & (np.mod(gxr, F32(9.0)) < 4.5)]
    mix_into(col, center, np.asarray(street.style.center_line, dtype=F32), aa[center])
    near = np.abs(gxr[:, None] - street.crossings[None, :].astype(F32)).min(axis=1) < 2.0
    zebra = ri[near & (np.mod(gyr, F32(1.0)) < 0.5)]
    mix_into(col, zebra, rgb(0.85, 0.85, 0.85), aa[zebra])
    return col


def shade_sky(cond: Condition, elev: np.ndarray, azim: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    e = np.clip(elev / F32(0.8), 0, 1)[:, None]
    col = (cond.sky_horizon * (1 - e) + cond.sky_top * e).astype(F32)
    if cond.clouds > 0:
        grid = rng.uniform(0, 1, size=(8, 26)).astype(F32)
        c = bilerp(grid, np.clip(elev, 0, 1.2) * F32(6.0), np.mod(azim, F32(2 * np.pi)) * F32(12 / np.pi))
        cover = (np.clip((c - F32(1 - cond.clouds)) * 3, 0, 1) * F32(0.8))[:, None]
        cloud = rgb(0.92, 0.92, 0.94) if cond.kind == "day" else (cond.sky_horizon * 0.9).astype(F32)
        col = col * (1 - cover) + cloud * cover
    return col
