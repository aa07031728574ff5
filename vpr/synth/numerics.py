"""Numeric helpers shared by the synthetic world and its renderer: per-purpose random generators, an integer
hash, bilinear lookups, smooth noise fields and colour mixing. Images are computed in float32 (``F32``)."""

from __future__ import annotations

import zlib

import numpy as np

F32 = np.float32  # images are computed in float32


def rgb(*rgb: float) -> np.ndarray:
    """A float32 colour."""
    return np.array(rgb, dtype=F32)


def rng_for(seed: int, *labels: object) -> np.random.Generator:
    """An independent generator for one (seed, labels...) purpose: order-independent determinism."""
    key = [zlib.crc32(str(label).encode("utf-8")) for label in labels]
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


def hash_u01(*ints: np.ndarray) -> np.ndarray:
    """A vectorised integer hash of several integer arrays, mapped to [0, 1)."""
    h = np.full(np.shape(ints[0]), 2166136261, dtype=np.uint32)
    for a in ints:
        h = (h ^ np.asarray(a).astype(np.int64).astype(np.uint32)) * np.uint32(16777619)
        h ^= h >> np.uint32(13)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x7FEB352D)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x846CA68B)
    h ^= h >> np.uint32(16)
    return h.astype(np.float64) * (1.0 / 4294967296.0)


def bilerp(grid: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a 2-D grid at fractional cell coordinates (clamped at the borders)."""
    gh, gw = grid.shape
    y = np.clip(y, 0, gh - 1.001)
    x = np.clip(x, 0, gw - 1.001)
    y0 = y.astype(np.int64)
    x0 = x.astype(np.int64)
    fy = y - y0
    fx = x - x0
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """A smooth random field in [-1, 1]: a ``cells`` grid of uniform values, bilinearly upsampled."""
    grid = rng.uniform(-1, 1, size=(cells[0] + 1, cells[1] + 1))
    y = np.linspace(0, cells[0], shape[0])[:, None]
    x = np.linspace(0, cells[1], shape[1])[None, :]
    return bilerp(grid, np.broadcast_to(y, shape), np.broadcast_to(x, shape))


def mix_into(col: np.ndarray, idx: np.ndarray, other: np.ndarray, weight: np.ndarray) -> None:
    """col[idx] = col[idx] * (1 - weight) + other * weight, with weight per row."""
    w = weight[:, None]
    col[idx] = col[idx] * (1 - w) + other * w
