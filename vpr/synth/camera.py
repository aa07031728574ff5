"""The pinhole camera of the synthetic renderer: its per-pixel rays, the projection of street points into the
image, and the frame buffers that the drawing passes share."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vpr.synth.numerics import F32


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
class Rays:
    """Every pixel's viewing ray, (H, W) float32 arrays: the unit horizontal direction (dx along t, dy along
    lat) and the rise per metre of horizontal travel (slope); ``f`` is the focal length in pixels."""

    f: float
    dx: np.ndarray
    dy: np.ndarray
    slope: np.ndarray


@dataclass
class Frame:
    """The buffers one view is drawn into, pass after pass: albedo and emitted light (H, W, 3), depth along
    the horizontal ray (H, W; inf where the sky shows) and illumination (H, W), with the rays they belong to
    and the ambient light level of the condition (``day_light``)."""

    rays: Rays
    img: np.ndarray
    emit: np.ndarray
    depth: np.ndarray
    illum: np.ndarray
    day_light: float


def pixel_rays(cam: Camera) -> Rays:
    """The viewing rays of all pixels of ``cam``."""
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
    return Rays(f, dx, dy, slope)


def project(cam: Camera, f: float, W: int, H: int, pt: float, pl: float, pz: float
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
