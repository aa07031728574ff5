"""The procedural street-corridor world of the synthetic place-recognition data.

The world is a set of straight streets. Each street is a corridor between two façade planes (left at lateral
offset +half_width, right at -half_width) made of buildings with their own colour, height (so a skyline),
window grid, shop front, signs and murals, plus lamp posts and trees on the sidewalks and a road with lane
markings. ``vpr.synth.renderer`` ray-casts views of it.

Coordinates in a street frame: ``t`` metres along the street, ``lat`` metres to the left of its center line,
``z`` metres above the ground.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vpr.synth.numerics import smooth_noise

N_ERAS = 4  # eras (time stamps) for which sign content is defined


# ---------------------------------------------------------------------------------------------- city styles


@dataclass(frozen=True)
class CityStyle:
    """What one city looks like: street widths, building shapes, palettes and street furniture."""

    name: str
    half_width: tuple[float, float]  # façade plane to street center line, m
    sidewalk: float  # sidewalk width, m
    building_width: tuple[float, float]
    building_height: tuple[float, float]
    floor_height: tuple[float, float]
    wall_palette: tuple[tuple[float, float, float], ...]
    sign_palette: tuple[tuple[float, float, float], ...]
    signs_per_building: float  # Poisson mean
    vertical_sign_prob: float
    mural_prob: float
    shop_prob: float
    tree_gap: tuple[float, float]  # distance between trees along one sidewalk, m
    crown_radius: tuple[float, float]
    lamp_gap: tuple[float, float]
    center_line: tuple[float, float, float]


PITTSBURGH = CityStyle(
    name="pittsburgh",
    half_width=(8.0, 12.0),
    sidewalk=3.0,
    building_width=(7.0, 20.0),
    building_height=(7.0, 26.0),
    floor_height=(3.2, 4.2),
    wall_palette=(
        (0.55, 0.26, 0.20), (0.63, 0.36, 0.26), (0.72, 0.64, 0.52), (0.50, 0.50, 0.53), (0.36, 0.30, 0.28),
        (0.82, 0.79, 0.72), (0.45, 0.50, 0.42), (0.70, 0.52, 0.35), (0.30, 0.34, 0.42), (0.60, 0.58, 0.62),
    ),
    sign_palette=(
        (0.85, 0.15, 0.12), (0.10, 0.25, 0.65), (0.95, 0.80, 0.20), (0.10, 0.45, 0.20), (0.95, 0.95, 0.92),
        (0.15, 0.15, 0.15), (0.55, 0.20, 0.55),
    ),
    signs_per_building=0.9,
    vertical_sign_prob=0.15,
    mural_prob=0.25,
    shop_prob=0.6,
    tree_gap=(9.0, 30.0),
    crown_radius=(1.5, 3.0),
    lamp_gap=(18.0, 30.0),
    center_line=(0.92, 0.80, 0.25),
)

TOKYO = CityStyle(
    name="tokyo",
    half_width=(5.0, 8.0),
    sidewalk=2.0,
    building_width=(5.0, 14.0),
    building_height=(9.0, 40.0),
    floor_height=(2.9, 3.6),
    wall_palette=(
        (0.80, 0.80, 0.78), (0.62, 0.62, 0.64), (0.45, 0.46, 0.50), (0.88, 0.85, 0.76), (0.70, 0.66, 0.60),
        (0.35, 0.38, 0.40), (0.78, 0.72, 0.70), (0.55, 0.60, 0.66), (0.92, 0.92, 0.94), (0.60, 0.42, 0.32),
        (0.42, 0.52, 0.45), (0.75, 0.62, 0.45), (0.50, 0.45, 0.60), (0.30, 0.28, 0.26),
    ),
    sign_palette=(
        (0.95, 0.10, 0.15), (0.10, 0.40, 0.95), (1.00, 0.85, 0.05), (0.05, 0.75, 0.35), (1.00, 0.45, 0.05),
        (0.85, 0.10, 0.70), (0.98, 0.98, 0.98), (0.05, 0.80, 0.90),
    ),
    signs_per_building=2.2,
    vertical_sign_prob=0.55,
    mural_prob=0.35,
    shop_prob=0.8,
    tree_gap=(25.0, 70.0),
    crown_radius=(1.0, 2.0),
    lamp_gap=(12.0, 22.0),
    center_line=(0.95, 0.95, 0.95),
)


# ---------------------------------------------------------------------------------------------- the street

MAX_SIGNS = 4


@dataclass
class FacadeSide:
    """One side of a street: a row of buildings along ``t``, stored as per-building arrays."""

    edges: np.ndarray  # (nb+1,) building boundaries along t (float64)
    bw: np.ndarray  # (nb,) building widths; this and all other per-building arrays are float32
    height: np.ndarray
    wall: np.ndarray  # (nb, 3) albedo
    floor_h: np.ndarray
    win_sp: np.ndarray  # window column spacing, m
    win_w: np.ndarray  # half the window width, as a fraction of the spacing
    win_h: np.ndarray  # half the window height, as a fraction of the floor height
    win_col: np.ndarray  # (nb, 3)
    has_shop: np.ndarray  # (nb,) bool
    shop_col: np.ndarray  # (nb, 3) awning colour
    mural_kind: np.ndarray  # (nb,) 0 none, 1 disc, 2 diamond, 3 stripes, 4 ring
    mural_pos: np.ndarray  # (nb, 2) local t, z of the mural center
    mural_r: np.ndarray
    mural_col: np.ndarray  # (nb, 3)
    sign_box: np.ndarray  # (nb, K, 4) local t0, t1, z0, z1
    sign_present: np.ndarray  # (nb, K, N_ERAS) bool
    sign_col: np.ndarray  # (nb, K, N_ERAS, 3)
    sign_cell: np.ndarray  # (nb, K) glyph cell size, m
    grime: np.ndarray  # smooth weathering field over (z/1.5 m, (t - t_lo)/1.5 m)
    t_lo: float
    uid: int  # distinguishes the two sides in hashes


@dataclass
class Street:
    """A straight street of one city: two façades, sidewalk objects, a road, and its place in UTM."""

    style: CityStyle
    origin: tuple[float, float]  # UTM easting, northing of t = 0, lat = 0
    heading: float  # direction of +t, radians counter-clockwise from east
    length: float  # places lie in [0, length]
    half_width: float
    sides: tuple[FacadeSide, FacadeSide]  # (left, right)
    obj_t: np.ndarray  # sidewalk objects: lamp posts (kind 0) and trees (kind 1)
    obj_l: np.ndarray
    obj_kind: np.ndarray
    obj_h: np.ndarray  # pole / trunk height
    obj_crown_r: np.ndarray
    obj_shade: np.ndarray  # per-object colour variation
    ground: np.ndarray  # smooth asphalt field over ((lat + hw)/1 m, (t - t_lo)/1 m)
    crossings: np.ndarray  # t of zebra crossings
    t_lo: float

    def utm(self, t: np.ndarray | float, lat: np.ndarray | float) -> np.ndarray:
        """UTM (easting, northing) of street-frame points, shape (..., 2)."""
        c, s = math.cos(self.heading), math.sin(self.heading)
        t = np.asarray(t, dtype=np.float64)
        lat = np.asarray(lat, dtype=np.float64)
        return np.stack([self.origin[0] + t * c - lat * s, self.origin[1] + t * s + lat * c], axis=-1)


def _build_side(rng: np.random.Generator, style: CityStyle, t_lo: float, t_hi: float, uid: int) -> FacadeSide:
    widths = []
    total = 0.0
    while total < t_hi - t_lo:
        w = rng.uniform(*style.building_width)
        widths.append(w)
        total += w
    nb = len(widths)
    edges = t_lo + np.concatenate([[0.0], np.cumsum(widths)])
    palette = np.asarray(style.wall_palette)
    signs = np.asarray(style.sign_palette)
    wall = palette[rng.integers(len(palette), size=nb)] * rng.uniform(0.8, 1.15, size=(nb, 1))
    wall = np.clip(wall + rng.normal(0, 0.04, size=(nb, 3)), 0.05, 0.95)
    height = rng.uniform(*style.building_height, size=nb)
    # Occasional towers make the skyline more distinctive.
    height = np.where(rng.random(nb) < 0.12, height * rng.uniform(1.4, 2.0, size=nb), height)
    floor_h = rng.uniform(*style.floor_height, size=nb)
    win_sp = rng.uniform(1.8, 3.6, size=nb)
    win_w = rng.uniform(0.3, 0.7, size=nb)
    win_h = rng.uniform(0.35, 0.65, size=nb)
    win_col = np.clip(rng.uniform(0.08, 0.35, size=(nb, 1)) + rng.normal(0, 0.05, size=(nb, 3))
                      + np.array([0.0, 0.03, 0.08]), 0.02, 0.6)
    has_shop = rng.random(nb) < style.shop_prob
    shop_col = signs[rng.integers(len(signs), size=nb)]
    mural_kind = np.where(rng.random(nb) < style.mural_prob, rng.integers(1, 5, size=nb), 0)
    bw = np.diff(edges)
    mural_r = rng.uniform(1.2, 3.5, size=nb)
    mural_pos = np.stack([rng.uniform(0.3, 0.7, size=nb) * bw,
                          rng.uniform(4.5, 4.5 + 0.5 * np.maximum(height - 9, 0.1), size=nb)], axis=1)
    mural_col = signs[rng.integers(len(signs), size=nb)] * rng.uniform(0.7, 1.0, size=(nb, 1))

    sign_box = np.zeros((nb, MAX_SIGNS, 4))
    n_signs = np.minimum(rng.poisson(style.signs_per_building, size=nb), MAX_SIGNS)
    sign_present = np.zeros((nb, MAX_SIGNS, N_ERAS), dtype=bool)
    for i in range(nb):
        for k in range(n_signs[i]):
            if rng.random() < style.vertical_sign_prob:
                w, h = rng.uniform(0.8, 1.6), rng.uniform(3.0, min(9.0, max(3.5, height[i] - 4)))
                z0 = rng.uniform(3.2, max(3.3, height[i] - h - 0.5))
            else:
                w, h = rng.uniform(2.0, min(8.0, bw[i] - 0.5)), rng.uniform(0.8, 1.8)
                z0 = rng.uniform(2.8, max(2.9, min(height[i] - h - 0.5, 12.0)))
            t0 = rng.uniform(0.2, max(0.3, bw[i] - w - 0.2))
            sign_box[i, k] = (t0, t0 + w, z0, z0 + h)
            if rng.random() < 0.75:
                sign_present[i, k] = True  # a permanent sign
            else:
                sign_present[i, k] = rng.random(N_ERAS) < 0.5
    sign_col = signs[rng.integers(len(signs), size=(nb, MAX_SIGNS, N_ERAS))]
    # Most signs keep their colour across eras; the others are repainted / replaced.
    keep = rng.random((nb, MAX_SIGNS)) < 0.7
    sign_col = np.where(keep[:, :, None, None], sign_col[:, :, :1, :], sign_col)
    sign_cell = rng.uniform(0.22, 0.45, size=(nb, MAX_SIGNS))
    n_cells = int((t_hi - t_lo) / 1.5) + 2
    grime = smooth_noise(rng, (40, n_cells), (8, max(2, n_cells // 6)))
    grime = grime + 0.35 * rng.uniform(-1, 1, size=grime.shape)
    def f32(a) -> np.ndarray:
        return np.asarray(a, dtype=np.float32)

    return FacadeSide(
        edges=edges, bw=f32(bw), height=f32(height), wall=f32(wall), floor_h=f32(floor_h), win_sp=f32(win_sp),
        win_w=f32(win_w / 2), win_h=f32(win_h / 2), win_col=f32(win_col), has_shop=has_shop,
        shop_col=f32(shop_col), mural_kind=mural_kind, mural_pos=f32(mural_pos), mural_r=f32(mural_r),
        mural_col=f32(mural_col), sign_box=f32(sign_box), sign_present=sign_present, sign_col=f32(sign_col),
        sign_cell=f32(sign_cell), grime=f32(grime), t_lo=t_lo, uid=uid)


def build_street(rng: np.random.Generator, style: CityStyle, origin: tuple[float, float], heading: float,
                 length: float, margin: float = 160.0) -> Street:
    """A random street whose places lie in t in [0, length]; façades extend ``margin`` beyond both ends."""
    t_lo, t_hi = -margin, length + margin
    hw = rng.uniform(*style.half_width)
    sides = (_build_side(rng, style, t_lo, t_hi, 0), _build_side(rng, style, t_lo, t_hi, 1))
    ts, ls, kinds, hs, crowns = [], [], [], [], []
    for side_sign in (1.0, -1.0):
        for kind, gap in ((0, style.lamp_gap), (1, style.tree_gap)):
            t = t_lo + rng.uniform(0, gap[1])
            while t < t_hi:
                ts.append(t)
                inset = (0.6 if kind == 0 else 1.4) * style.sidewalk * rng.uniform(0.8, 1.0)
                ls.append(side_sign * (hw - inset))
                kinds.append(kind)
                hs.append(rng.uniform(5.5, 7.5) if kind == 0 else rng.uniform(2.2, 3.5))
                crowns.append(0.0 if kind == 0 else rng.uniform(*style.crown_radius))
                t += rng.uniform(*gap)
    n_cells_t = int(t_hi - t_lo) + 2
    ground = smooth_noise(rng, (int(2 * hw) + 2, n_cells_t), (3, max(2, n_cells_t // 5)))
    ground = ground + 0.3 * rng.uniform(-1, 1, size=ground.shape)
    crossings = np.sort(rng.uniform(t_lo, t_hi, size=max(1, int((t_hi - t_lo) / 90))))
    return Street(style, origin, heading, length, hw, sides, np.asarray(ts), np.asarray(ls),
                  np.asarray(kinds), np.asarray(hs), np.asarray(crowns), rng.uniform(-1, 1, size=len(ts)),
                  ground.astype(np.float32), crossings, t_lo)
