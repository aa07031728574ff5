"""Light and atmosphere of a drawn frame: illumination, the night's lamp light pools, lamp halos and bloom of
emitted light, fog, exposure, white balance and sensor noise."""

from __future__ import annotations

import numpy as np

from vpr.synth.camera import Camera, Frame, Rays, project
from vpr.synth.conditions import Condition
from vpr.synth.numerics import F32, rgb
from vpr.synth.props import OBJECT_RANGE
from vpr.synth.world import Street


def light_and_expose(street: Street, cam: Camera, cond: Condition, rng: np.random.Generator, frame: Frame
                     ) -> np.ndarray:
    """The final image of a drawn frame: lit albedo plus emitted light, fog, glow, exposure and noise."""
    img, emit, depth, illum = frame.img, frame.emit, frame.depth, frame.illum
    f = frame.rays.f
    H, W = depth.shape
    finite = np.isfinite(depth)
    if cond.kind == "night":
        illum = illum + lamp_light(street, cam, frame.rays, depth, finite)
    out = img * illum[..., None]
    out += emit
    fogw = np.zeros((H, W), dtype=F32)
    fogw[finite] = 1 - np.exp(-depth[finite] / F32(cond.fog_dist))
    out += (cond.fog.astype(F32) - out) * fogw[..., None]
    if cond.kind != "day":
        out += bloom(emit) * F32(0.6 if cond.kind == "night" else 0.3)
        if cond.kind == "night":
            out += lamp_halos(street, cam, f, W, H)
    out *= (cond.exposure * cond.white_balance).astype(F32)
    out += rng.standard_normal(out.shape, dtype=F32) * F32(cond.noise)
    np.clip(out, 0, 1, out=out)
    return out


def lamp_light(street: Street, cam: Camera, rays: Rays, depth: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """Light pools that the lamp posts throw on nearby surfaces at night (added to the illumination)."""
    dx, dy, slope = rays.dx, rays.dy, rays.slope
    light = np.zeros(depth.shape, dtype=F32)
    d = np.where(finite, depth, F32(0))
    px, py, pz = F32(cam.t) + d * dx, F32(cam.lat) + d * dy, F32(cam.height) + d * slope
    for i in np.flatnonzero((street.obj_kind == 0) & (np.abs(street.obj_t - cam.t) < OBJECT_RANGE)):
        dist2 = (px - F32(street.obj_t[i])) ** 2 + (py - F32(street.obj_l[i])) ** 2 \
            + (pz - F32(street.obj_h[i])) ** 2
        light += np.exp(dist2 * F32(-1 / 20.0))
    light[~finite] = 0
    return light


def lamp_halos(street: Street, cam: Camera, f: float, W: int, H: int) -> np.ndarray:
    """Bright light blobs around the lamp heads (night)."""
    out = np.zeros((H, W), dtype=F32)
    yy = np.arange(H, dtype=F32)[:, None] + F32(0.5)
    xx = np.arange(W, dtype=F32)[None, :] + F32(0.5)
    for i in np.flatnonzero((street.obj_kind == 0) & (np.abs(street.obj_t - cam.t) < OBJECT_RANGE)):
        p = project(cam, f, W, H, street.obj_t[i], street.obj_l[i], street.obj_h[i] - 0.2)
        if p is None:
            continue
        u, v, dist = p
        rad = min(max(1.0, 0.6 * f / dist), W / 10)
        if not (-3 * rad < u < W + 3 * rad and -3 * rad < v < H + 3 * rad):
            continue
        k = F32(-0.5 / (rad * rad))
        out += np.exp((yy - F32(v)) ** 2 * k) * np.exp((xx - F32(u)) ** 2 * k) * F32(0.8)
    return out[..., None] * rgb(0.9, 0.76, 0.5)


def _box_blur(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r + 1, r)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis)
    n = a.shape[axis]
    hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    return (hi - lo) * F32(1 / (2 * r + 1))


def bloom(emit: np.ndarray) -> np.ndarray:
    """A soft glow around light sources: a repeated box blur of the emitted light."""
    r = max(1, emit.shape[1] // 60)
    b = emit
    for _ in range(2):
        b = _box_blur(_box_blur(b, r, 0), r, 1)
    return b
