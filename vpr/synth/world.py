"""Procedural street-corridor world and its ray-cast renderer, for the synthetic place-recognition data.

The world is a set of straight streets. Each street is a corridor between two façade planes (left at lateral
offset +half_width, right at -half_width) made of buildings with their own colour, height (so a skyline),
window grid, shop front, signs and murals, plus lamp posts and trees on the sidewalks and a road with lane
markings. Every pixel of a view is ray-cast analytically against this corridor (vectorised numpy, no
per-pixel loops), so views of one place share content under real viewpoint changes (position, heading,
pitch, roll, field of view) and neighbouring places overlap because they see the same buildings.

On top of the static world, each rendered image gets its own *condition*: time of day (day, sunset, night
with lit windows, glowing signs and lamp halos), exposure, white balance, fog, clouds, an era index (some
signs change between eras, as shops do over the years), a season (tree foliage) and transient distractors
(cars, pedestrians, random occluders) and sensor noise.

Coordinates in a street frame: ``t`` metres along the street, ``lat`` metres to the left of its centre line,
``z`` metres above the ground.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace

import numpy as np

RMAX = 150.0  # façade distance cap for rays running (almost) along the street
OBJECT_RANGE = 70.0  # lamp posts / trees further than this are not drawn
N_ERAS = 4  # eras (time stamps) for which sign content is defined
F32 = np.float32  # images are computed in float32


def _c(*rgb: float) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------- city styles


@dataclass(frozen=True)
class CityStyle:
    """What one city looks like: street widths, building shapes, palettes and street furniture."""

    name: str
    half_width: tuple[float, float]  # façade plane to street centre line, m
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
    centre_line: tuple[float, float, float]


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
    centre_line=(0.92, 0.80, 0.25),
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
    centre_line=(0.95, 0.95, 0.95),
)

CAR_COLOURS = np.array([[0.8, 0.8, 0.82], [0.1, 0.1, 0.12], [0.6, 0.1, 0.1], [0.15, 0.25, 0.5],
                        [0.5, 0.5, 0.52], [0.9, 0.9, 0.88]], dtype=np.float32)

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
    mural_pos: np.ndarray  # (nb, 2) local t, z of the mural centre
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


# ---------------------------------------------------------------------------------------------- conditions


@dataclass
class Camera:
    """A pinhole camera in a street frame. Angles in radians; yaw 0 looks along +t, pi/2 looks left."""

    t: float
    lat: float
    height: float
    yaw: float
    pitch: float
    roll: float
    hfov: float
    width: int
    height_px: int


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


# ---------------------------------------------------------------------------------------------- shading


def _mix_into(col: np.ndarray, idx: np.ndarray, other: np.ndarray, weight: np.ndarray) -> None:
    """col[idx] = col[idx] * (1 - weight) + other * weight, with weight per row."""
    w = weight[:, None]
    col[idx] = col[idx] * (1 - w) + other * w


def _shade_facade(fs: FacadeSide, t: np.ndarray, z: np.ndarray, r: np.ndarray, cond: Condition
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Albedo and emitted light (n, 3) of façade points (t, z) seen from distance r."""
    nb = len(fs.height)
    bi = np.clip(np.searchsorted(fs.edges, t, side="right") - 1, 0, nb - 1)
    lt = (t - fs.edges[bi]).astype(F32)
    bw = fs.bw[bi]
    bh = fs.height[bi]
    aa = np.clip(1.7 - r / F32(28.0), 0.15, 1.0).astype(F32)  # fine detail fades with distance (anti-alias)
    grime = bilerp(fs.grime, z / F32(1.5), (t - F32(fs.t_lo)) / F32(1.5))
    col = fs.wall[bi] * (1 + F32(0.12) * grime)[:, None]
    dark = (lt < 0.25) | (lt > bw - 0.25) | (z > bh - 0.6)
    col[dark] *= F32(0.62)
    emit = np.zeros_like(col)
    night = cond.kind != "day"

    fh = fs.floor_h[bi]
    floor = np.floor(z / fh)
    fz = z / fh - floor
    ct = (lt - 1) / fs.win_sp[bi]
    column = np.floor(ct)
    ft = ct - column
    win = ((floor >= 1) & (z < bh - 1) & (lt > 1) & (lt < bw - 1)
           & (np.abs(ft - 0.5) < fs.win_w[bi]) & (np.abs(fz - 0.45) < fs.win_h[bi]))
    wi = np.flatnonzero(win)
    if wi.size:
        bwi = bi[wi]
        uwin = hash_u01(bwi, floor[wi], column[wi], np.full_like(bwi, fs.uid)).astype(F32)
        _mix_into(col, wi, fs.win_col[bwi] * (0.75 + 0.5 * uwin)[:, None], aa[wi])
        if night:
            lit = uwin < cond.lit_windows
            warm = _c(1.0, 0.82, 0.5) * (0.55 + 0.45 * hash_u01(bwi[lit], floor[wi][lit], column[wi][lit])
                                           ).astype(F32)[:, None]
            emit[wi[lit]] = warm

    shop = fs.has_shop[bi] & (z < 3.3) & (lt > 0.6) & (lt < bw - 0.6)
    si = np.flatnonzero(shop)
    if si.size:
        zs, ls_ = z[si], lt[si]
        glass = si[(zs > 0.3) & (zs < 2.5) & (np.mod(ls_, F32(2.2)) > 0.12)]
        awning = si[(zs >= 2.55) & (zs < 3.2)]
        _mix_into(col, glass, _c(0.12, 0.14, 0.17), 1 - aa[glass] * 0.7)
        col[awning] = fs.shop_col[bi[awning]]
        if night:
            lit = glass[hash_u01(bi[glass], np.full_like(glass, 3 + fs.uid)) < 0.7]
            emit[lit] = _c(0.75, 0.68, 0.52)

    kind = fs.mural_kind[bi]
    mi = np.flatnonzero(kind > 0)
    if mi.size:
        bm = bi[mi]
        k = kind[mi]
        dt = (lt[mi] - fs.mural_pos[bm, 0]) / fs.mural_r[bm]
        dz = (z[mi] - fs.mural_pos[bm, 1]) / fs.mural_r[bm]
        rr = dt * dt + dz * dz
        mural = (((k == 1) & (rr < 1)) | ((k == 2) & (np.abs(dt) + np.abs(dz) < 1))
                 | ((k == 3) & (np.abs(dt) < 1.3) & (np.abs(dz) < 0.8) & (np.mod(dt + dz, F32(0.8)) < 0.4))
                 | ((k == 4) & (rr < 1) & (rr > 0.4)))
        col[mi[mural]] = fs.mural_col[bm[mural]]

    era = cond.era % N_ERAS
    for k in range(MAX_SIGNS):
        cand = np.flatnonzero(fs.sign_present[bi, k, era])
        if cand.size == 0:
            continue
        box = fs.sign_box[bi[cand], k]
        lc, zc = lt[cand], z[cand]
        ins = (lc >= box[:, 0]) & (lc < box[:, 1]) & (zc >= box[:, 2]) & (zc < box[:, 3])
        if not ins.any():
            continue
        idx = cand[ins]
        box, lc, zc = box[ins], lc[ins], zc[ins]
        b = bi[idx]
        cell = fs.sign_cell[b, k]
        gx = np.floor((lc - box[:, 0]) / cell)
        gz = np.floor((zc - box[:, 2]) / cell)
        edge = ((lc - box[:, 0]) < cell) | ((box[:, 1] - lc) < cell) | ((zc - box[:, 2]) < cell) \
            | ((box[:, 3] - zc) < cell)
        glyph = (hash_u01(b, gx, gz, np.full_like(b, k + 8 * fs.uid)) < 0.45) & ~edge
        bg = fs.sign_col[b, k, era]
        fg = np.where((bg.sum(axis=1) > 1.6)[:, None], F32(0.08), F32(0.95))
        a = aa[idx][:, None]
        sc = np.where(glyph[:, None], fg * a + bg * (1 - a), bg)
        col[idx] = sc
        if night:
            emit[idx] = sc * F32(1.3 if cond.kind == "night" else 0.4)
    np.clip(col, 0, 1, out=col)
    return col, emit


def _shade_ground(street: Street, gx: np.ndarray, gy: np.ndarray, rg: np.ndarray) -> np.ndarray:
    hw, sw = street.half_width, street.style.sidewalk
    aa = np.clip(1.7 - rg / F32(25.0), 0.1, 1.0).astype(F32)
    noise = bilerp(street.ground, gy + F32(hw), gx - F32(street.t_lo))
    road = np.abs(gy) < hw - sw
    col = np.empty((gx.size, 3), dtype=F32)
    col[:] = ((0.58 + 0.04 * noise)[:, None] * _c(1.0, 0.98, 0.94))
    ri = np.flatnonzero(road)
    col[ri] = (0.30 + 0.05 * noise[ri])[:, None] * _c(1.0, 1.0, 1.03)
    pi = np.flatnonzero(~road)
    tiles = pi[(np.mod(gx[pi], F32(1.2)) < 0.06) | (np.mod(gy[pi], F32(1.2)) < 0.06)]
    col[tiles] *= (1 - 0.25 * aa[tiles])[:, None]
    col[np.abs(np.abs(gy) - F32(hw - sw)) < 0.18] = _c(0.72, 0.72, 0.70)
    gxr, gyr = gx[ri], gy[ri]
    centre = ri[(np.abs(gyr) < 0.12) & (np.mod(gxr, F32(9.0)) < 4.5)]
    _mix_into(col, centre, np.asarray(street.style.centre_line, dtype=F32), aa[centre])
    near = np.abs(gxr[:, None] - street.crossings[None, :].astype(F32)).min(axis=1) < 2.0
    zebra = ri[near & (np.mod(gyr, F32(1.0)) < 0.5)]
    _mix_into(col, zebra, _c(0.85, 0.85, 0.85), aa[zebra])
    return col


def _sky(cond: Condition, elev: np.ndarray, azim: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    e = np.clip(elev / F32(0.8), 0, 1)[:, None]
    col = (cond.sky_horizon * (1 - e) + cond.sky_top * e).astype(F32)
    if cond.clouds > 0:
        grid = rng.uniform(0, 1, size=(8, 26)).astype(F32)
        c = bilerp(grid, np.clip(elev, 0, 1.2) * F32(6.0), np.mod(azim, F32(2 * np.pi)) * F32(12 / np.pi))
        cover = (np.clip((c - F32(1 - cond.clouds)) * 3, 0, 1) * F32(0.8))[:, None]
        cloud = _c(0.92, 0.92, 0.94) if cond.kind == "day" else (cond.sky_horizon * 0.9).astype(F32)
        col = col * (1 - cover) + cloud * cover
    return col


# ---------------------------------------------------------------------------------------------- render


def render(street: Street, cam: Camera, cond: Condition) -> np.ndarray:
    """Render one view: a float32 (H, W, 3) image in [0, 1]."""
    rng = np.random.default_rng(cond.seed)
    W, H = cam.width, cam.height_px
    f = (W / 2) / math.tan(cam.hfov / 2)
    x = np.arange(W, dtype=F32) + F32(0.5 - W / 2)
    y = np.arange(H, dtype=F32) + F32(0.5 - H / 2)
    x, y = np.meshgrid(x, y)
    cr, sr = F32(math.cos(cam.roll)), F32(math.sin(cam.roll))
    xr, yr = x * cr + y * sr, y * cr - x * sr
    # camera frame: forward f, left -xr, up -yr; pitch about the left axis, then yaw about the vertical
    cp, sp = math.cos(cam.pitch), math.sin(cam.pitch)
    fwd = F32(f * cp) + yr * F32(sp)
    up = F32(f * sp) - yr * F32(cp)
    cy_, sy_ = F32(math.cos(cam.yaw)), F32(math.sin(cam.yaw))
    dx = fwd * cy_ + xr * sy_
    dy = fwd * sy_ - xr * cy_
    inv = 1 / np.hypot(dx, dy)
    dx *= inv
    dy *= inv
    slope = up * inv

    hw = street.half_width
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(dy > 0, F32(hw - cam.lat), F32(-hw - cam.lat)) / dy
        r[~(np.abs(dy) > 1e-6)] = RMAX
        np.minimum(r, F32(RMAX), out=r)
        rg = np.where(slope < -1e-6, F32(cam.height) / -slope, np.inf).astype(F32)
    left = dy > 0
    ground = rg < r

    img = np.zeros((H * W, 3), dtype=F32)
    emit = np.zeros((H * W, 3), dtype=F32)
    depth = np.full(H * W, np.inf, dtype=F32)
    illum = np.ones(H * W, dtype=F32)
    day_light = {"day": 1.0, "sunset": 0.7, "night": 0.07}[cond.kind]
    rf, dxf, dyf, sf = r.ravel(), dx.ravel(), dy.ravel(), slope.ravel()

    for side_idx, side_mask in ((0, left), (1, ~left)):
        fs = street.sides[side_idx]
        cand = np.flatnonzero(side_mask & ~ground)
        if cand.size == 0:
            continue
        rc = rf[cand]
        tc = F32(cam.t) + rc * dxf[cand]
        zc = F32(cam.height) + rc * sf[cand]
        bi = np.clip(np.searchsorted(fs.edges, tc, side="right") - 1, 0, len(fs.height) - 1)
        ins = zc <= fs.height[bi]
        idx = cand[ins]
        if idx.size == 0:
            continue
        a, e = _shade_facade(fs, tc[ins], zc[ins], rc[ins], cond)
        img[idx] = a
        emit[idx] = e
        depth[idx] = rc[ins]
        sun = cond.sun_left if side_idx == 0 else 1.0 - cond.sun_left
        illum[idx] = day_light * (0.55 + 0.9 * sun)

    gidx = np.flatnonzero(ground)
    if gidx.size:
        rgi = rg.ravel()[gidx]
        gx = F32(cam.t) + rgi * dxf[gidx]
        gy = F32(cam.lat) + rgi * dyf[gidx]
        img[gidx] = _shade_ground(street, gx, gy, rgi)
        depth[gidx] = rgi
        illum[gidx] = day_light * 0.95

    sidx = np.flatnonzero(np.isinf(depth))
    if sidx.size:
        img[sidx] = _sky(cond, np.arctan(sf[sidx]), np.arctan2(dyf[sidx], dxf[sidx]), rng)

    img = img.reshape(H, W, 3)
    emit = emit.reshape(H, W, 3)
    depth = depth.reshape(H, W)
    illum = illum.reshape(H, W)
    _draw_objects(street, cam, cond, f, dx, dy, slope, img, emit, depth, illum, day_light)
    _draw_transients(street, cam, cond, rng, f, dx, dy, slope, img, emit, depth, illum, day_light)

    # Light and atmosphere.
    finite = np.isfinite(depth)
    if cond.kind == "night":
        illum = illum + _lamp_light(street, cam, dx, dy, slope, depth, finite)
    out = img * illum[..., None]
    out += emit
    fogw = np.zeros((H, W), dtype=F32)
    fogw[finite] = 1 - np.exp(-depth[finite] / F32(cond.fog_dist))
    out += (cond.fog.astype(F32) - out) * fogw[..., None]
    if cond.kind != "day":
        out += _bloom(emit) * F32(0.6 if cond.kind == "night" else 0.3)
        if cond.kind == "night":
            out += _lamp_halos(street, cam, f, W, H)
    out *= (cond.exposure * cond.white_balance).astype(F32)
    out += rng.standard_normal(out.shape, dtype=F32) * F32(cond.noise)
    np.clip(out, 0, 1, out=out)
    return out


def _draw_objects(street: Street, cam: Camera, cond: Condition, f: float, dx, dy, slope, img, emit, depth,
                  illum, day_light: float) -> None:
    """Lamp posts and trees: ray-cast each one only inside its projected bounding box."""
    H, W = dx.shape
    foliage = [np.array([0.20, 0.42, 0.15]), np.array([0.62, 0.42, 0.12]), np.array([0.35, 0.28, 0.22])]
    for i in np.flatnonzero(np.abs(street.obj_t - cam.t) < OBJECT_RANGE):
        kind, oh, crown_r = street.obj_kind[i], street.obj_h[i], street.obj_crown_r[i]
        rad = max(crown_r, 0.45)
        top = oh + (1.8 * crown_r if kind == 1 else 0.1)
        corners = [_project(cam, f, W, H, street.obj_t[i] + a, street.obj_l[i] + b, zc)
                   for a in (-rad, rad) for b in (-rad, rad) for zc in (0.0, top)]
        if any(c is None for c in corners):
            if all(c is None for c in corners):
                continue
            u0, u1, v0, v1 = 0, W, 0, H
        else:
            us = [c[0] for c in corners]
            vs = [c[1] for c in corners]
            u0, u1 = max(0, int(min(us)) - 1), min(W, int(max(us)) + 2)
            v0, v1 = max(0, int(min(vs)) - 1), min(H, int(max(vs)) + 2)
            if u0 >= u1 or v0 >= v1:
                continue
        win = (slice(v0, v1), slice(u0, u1))
        ot, ol = street.obj_t[i] - cam.t, street.obj_l[i] - cam.lat
        wdx, wdy = dx[win], dy[win]
        lam = ot * wdx + ol * wdy  # distance along the ray to the closest approach
        delta = np.abs(ot * wdy - ol * wdx)
        zl = cam.height + lam * slope[win]
        pole = (delta < (0.12 if kind == 0 else 0.22)) & (zl >= 0) & (zl <= oh)
        head = (kind == 0) & (delta < 0.45) & (zl > oh - 0.35) & (zl <= oh + 0.05)
        if kind == 1:
            crown_rr = (delta * delta + (zl - (oh + crown_r * 0.8)) ** 2) / (crown_r * crown_r)
            crown = crown_rr < (0.55 if cond.season == 2 else 1.0)  # bare trees in winter: a sparser crown
        else:
            crown_rr = np.zeros_like(lam)
            crown = np.zeros_like(pole)
        m = (pole | head | crown) & (lam > 0.5) & (lam < depth[win])
        if not m.any():
            continue
        is_crown = (crown & ~pole)[m]
        is_head = head[m]
        if kind == 0:
            col = np.where(is_head[:, None], np.array([0.85, 0.85, 0.8]), np.array([0.38, 0.40, 0.42]))
        else:
            leaf = foliage[cond.season] * (1 + 0.2 * street.obj_shade[i])
            leaf = leaf * (0.75 + 0.35 * (1 - crown_rr[m]))[:, None]
            col = np.where(is_crown[:, None], leaf, np.array([0.30, 0.22, 0.15]))
        img[win][m] = col
        depth[win][m] = lam[m]
        illum[win][m] = day_light * 0.9
        emit[win][m] = np.where(is_head[:, None], _c(1.5, 1.35, 0.9), F32(0)) if cond.kind == "night" else 0.0


def _lamp_light(street: Street, cam: Camera, dx, dy, slope, depth, finite) -> np.ndarray:
    """Light pools that the lamp posts throw on nearby surfaces at night (added to the illumination)."""
    light = np.zeros(depth.shape, dtype=F32)
    d = np.where(finite, depth, F32(0))
    px, py, pz = F32(cam.t) + d * dx, F32(cam.lat) + d * dy, F32(cam.height) + d * slope
    for i in np.flatnonzero((street.obj_kind == 0) & (np.abs(street.obj_t - cam.t) < OBJECT_RANGE)):
        dist2 = (px - F32(street.obj_t[i])) ** 2 + (py - F32(street.obj_l[i])) ** 2 \
            + (pz - F32(street.obj_h[i])) ** 2
        light += np.exp(dist2 * F32(-1 / 20.0))
    light[~finite] = 0
    return light


def _project(cam: Camera, f: float, W: int, H: int, pt: float, pl: float, pz: float
             ) -> tuple[float, float, float] | None:
    """Image position (u, v) and distance of a street-frame point, or None when behind the camera."""
    vt, vl, vz = pt - cam.t, pl - cam.lat, pz - cam.height
    cy_, sy_ = math.cos(cam.yaw), math.sin(cam.yaw)
    fwd_h = vt * cy_ + vl * sy_
    left = -vt * sy_ + vl * cy_
    cp, sp = math.cos(cam.pitch), math.sin(cam.pitch)
    fwd = fwd_h * cp + vz * sp
    up = -fwd_h * sp + vz * cp
    if fwd < 0.5:
        return None
    xr, yr = -left * f / fwd, -up * f / fwd
    cr, sr = math.cos(cam.roll), math.sin(cam.roll)
    x, y = xr * cr - yr * sr, xr * sr + yr * cr
    return x + W / 2, y + H / 2, math.sqrt(vt * vt + vl * vl + vz * vz)


def _lamp_halos(street: Street, cam: Camera, f: float, W: int, H: int) -> np.ndarray:
    """Bright light blobs around the lamp heads (night)."""
    out = np.zeros((H, W), dtype=F32)
    yy = np.arange(H, dtype=F32)[:, None] + F32(0.5)
    xx = np.arange(W, dtype=F32)[None, :] + F32(0.5)
    for i in np.flatnonzero((street.obj_kind == 0) & (np.abs(street.obj_t - cam.t) < OBJECT_RANGE)):
        p = _project(cam, f, W, H, street.obj_t[i], street.obj_l[i], street.obj_h[i] - 0.2)
        if p is None:
            continue
        u, v, dist = p
        rad = min(max(1.0, 0.6 * f / dist), W / 10)
        if not (-3 * rad < u < W + 3 * rad and -3 * rad < v < H + 3 * rad):
            continue
        k = F32(-0.5 / (rad * rad))
        out += np.exp((yy - F32(v)) ** 2 * k) * np.exp((xx - F32(u)) ** 2 * k) * F32(0.8)
    return out[..., None] * _c(0.9, 0.76, 0.5)


def _box_blur(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r + 1, r)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis)
    n = a.shape[axis]
    hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    return (hi - lo) * F32(1 / (2 * r + 1))


def _bloom(emit: np.ndarray) -> np.ndarray:
    """A soft glow around light sources: a repeated box blur of the emitted light."""
    r = max(1, emit.shape[1] // 60)
    b = emit
    for _ in range(2):
        b = _box_blur(_box_blur(b, r, 0), r, 1)
    return b


def _draw_transients(street: Street, cam: Camera, cond: Condition, rng: np.random.Generator, f: float,
                     dx, dy, slope, img, emit, depth, illum, day_light: float) -> None:
    """Cars on the road, pedestrians on the sidewalks and random occluders, drawn with the depth buffer."""
    H, W = dx.shape
    yy = np.arange(H, dtype=F32)[:, None] + F32(0.5)
    xx = np.arange(W, dtype=F32)[None, :] + F32(0.5)
    hw, sw = street.half_width, street.style.sidewalk
    items = []
    for _ in range(cond.cars):
        items.append(("car", rng.uniform(-25, 35), rng.uniform(-(hw - sw) + 1.2, (hw - sw) - 1.2)))
    for _ in range(cond.pedestrians):
        side = rng.choice([-1.0, 1.0])
        items.append(("person", rng.uniform(-15, 25), side * (hw - sw * rng.uniform(0.2, 0.8))))
    for kind, along, lat in items:
        # a position ahead of the camera (in its viewing direction), at the chosen lateral offset
        pt = cam.t + along * (1 if math.cos(cam.yaw) >= 0 else -1) + rng.uniform(-3, 3)
        p = _project(cam, f, W, H, pt, lat, 0.0)
        if p is None:
            continue
        u, v_ground, dist = p
        s = f / dist  # pixels per metre at that distance
        ax = np.abs(xx - u) / s  # metres from the object's axis
        up = (v_ground - yy) / s  # metres above the ground (approximately, at the object's distance)
        if kind == "car":
            width, height = rng.uniform(1.8, 4.5), rng.uniform(1.4, 1.9)
            body = CAR_COLOURS[rng.integers(len(CAR_COLOURS))]
            box = (ax < width / 2) & (up > 0.25) & (up < 0.95 * height)
            cab = (ax < width * 0.33) & (up >= 0.55 * height) & (up < height)
            wheel = (ax - width * 0.32) ** 2 + (up - 0.3) ** 2 < 0.33**2
            masks = [(box, body), (cab, _c(0.12, 0.15, 0.2)), (wheel, _c(0.05, 0.05, 0.05))]
        else:
            height = rng.uniform(1.5, 1.9)
            torso = (ax < 0.25) & (up > 0.45 * height) & (up < 0.8 * height)
            legs = (ax < 0.16) & (up >= 0) & (up <= 0.45 * height)
            head = ax**2 + (up - 0.9 * height) ** 2 < 0.12**2
            masks = [(torso, rng.uniform(0.05, 0.9, size=3)), (legs, _c(0.15, 0.15, 0.25)),
                     (head, _c(0.75, 0.6, 0.5))]
        for mask, col in masks:
            m = mask & (depth > dist)
            img[m] = col
            depth[m] = dist
            illum[m] = day_light
            emit[m] = 0.0
        if kind == "car" and cond.kind == "night":  # headlights
            rad = max(0.8, 0.25 * s)
            for sgn in (-1, 1):
                lu, lv = u + sgn * width * s * 0.38, v_ground - 0.6 * s
                blob = np.exp(-((xx - lu) ** 2 + (yy - lv) ** 2) / F32(2 * rad * rad))
                emit += blob[..., None] * _c(1.5, 1.3, 1.0)
    for _ in range(cond.occluders):
        cu, cv = rng.uniform(0, W), rng.uniform(0, H)
        ru, rv = rng.uniform(0.06, 0.2) * W, rng.uniform(0.08, 0.25) * H
        m = ((xx - cu) / ru) ** 2 + ((yy - cv) / rv) ** 2 < 1
        img[m] = rng.uniform(0.05, 0.8, size=3)
        depth[m] = 2.0
        illum[m] = day_light
        emit[m] = 0.0
