"""The ray-cast renderer of the synthetic place-recognition data: ``render`` draws one view of a street.

Every pixel of a view is ray-cast analytically against the street corridor of ``vpr.synth.world``
(vectorised numpy, no per-pixel loops), so views of one place share content under real viewpoint changes
(position, heading, pitch, roll, field of view) and neighbouring places overlap because they see the same
buildings.

On top of the static world, each rendered image gets its own *condition* (``vpr.synth.conditions``): time of
day (day, sunset, night with lit windows, glowing signs and lamp halos), exposure, white balance, fog,
clouds, an era index (some signs change between eras, as shops do over the years), a season (tree foliage)
and transient distractors (cars, pedestrians, random occluders) and sensor noise.
"""

from __future__ import annotations

import numpy as np

from vpr.synth.camera import Camera, Frame, Rays, pixel_rays
from vpr.synth.conditions import Condition
from vpr.synth.facade import shade_facade
from vpr.synth.ground_sky import shade_ground, shade_sky
from vpr.synth.lighting import light_and_expose
from vpr.synth.numerics import F32
from vpr.synth.props import draw_street_furniture, draw_transients
from vpr.synth.world import Street

RMAX = 150.0  # façade distance cap for rays running (almost) along the street


def render(street: Street, cam: Camera, cond: Condition) -> np.ndarray:
    """Render one view: a float32 (H, W, 3) image in [0, 1]."""
    rng = np.random.default_rng(cond.seed)
    rays = pixel_rays(cam)
    frame = _cast_corridor(street, cam, cond, rays, rng)
    draw_street_furniture(street, cam, cond, frame)
    draw_transients(street, cam, cond, rng, frame)
    return light_and_expose(street, cam, cond, rng, frame)


def _cast_corridor(street: Street, cam: Camera, cond: Condition, rays: Rays, rng: np.random.Generator
                   ) -> Frame:
    """Ray-cast the façades, the ground and the sky: the frame before any object is drawn into it."""
    dx, dy, slope = rays.dx, rays.dy, rays.slope
    H, W = dx.shape
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
        a, e = shade_facade(fs, tc[ins], zc[ins], rc[ins], cond)
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
        img[gidx] = shade_ground(street, gx, gy, rgi)
        depth[gidx] = rgi
        illum[gidx] = day_light * 0.95

    sidx = np.flatnonzero(np.isinf(depth))
    if sidx.size:
        img[sidx] = shade_sky(cond, np.arctan(sf[sidx]), np.arctan2(dyf[sidx], dxf[sidx]), rng)
    return Frame(rays, img.reshape(H, W, 3), emit.reshape(H, W, 3), depth.reshape(H, W), illum.reshape(H, W),
                 day_light)
