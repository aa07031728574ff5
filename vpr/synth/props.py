"""Objects drawn over the ray-cast corridor with the depth buffer: the street furniture (lamp posts and trees)
and the transient distractors of one photo (cars, pedestrians, random occluders)."""

from __future__ import annotations

import math

import numpy as np

from vpr.synth.camera import Camera, Frame, project
from vpr.synth.conditions import Condition
from vpr.synth.numerics import F32, rgb
from vpr.synth.world import Street

OBJECT_RANGE = 70.0  # lamp posts / trees further than this are not drawn
CAR_COLOURS = np.array([[0.8, 0.8, 0.82], [0.1, 0.1, 0.12], [0.6, 0.1, 0.1], [0.15, 0.25, 0.5],
                        [0.5, 0.5, 0.52], [0.9, 0.9, 0.88]], dtype=np.float32)


def draw_street_furniture(street: Street, cam: Camera, cond: Condition, frame: Frame) -> None:
    """Lamp posts and trees: ray-cast each one only inside its projected bounding box."""
    f, dx, dy, slope = frame.rays.f, frame.rays.dx, frame.rays.dy, frame.rays.slope
    img, emit, depth, illum, day_light = frame.img, frame.emit, frame.depth, frame.illum, frame.day_light
    H, W = dx.shape
    foliage = [np.array([0.20, 0.42, 0.15]), np.array([0.62, 0.42, 0.12]), np.array([0.35, 0.28, 0.22])]
    for i in np.flatnonzero(np.abs(street.obj_t - cam.t) < OBJECT_RANGE):
        kind, oh, crown_r = street.obj_kind[i], street.obj_h[i], street.obj_crown_r[i]
        rad = max(crown_r, 0.45)
        top = oh + (1.8 * crown_r if kind == 1 else 0.1)
        corners = [project(cam, f, W, H, street.obj_t[i] + a, street.obj_l[i] + b, zc)
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
        glow = np.where(is_head[:, None], rgb(1.5, 1.35, 0.9), F32(0)) if cond.kind == "night" else 0.0
        emit[win][m] = glow


def draw_transients(street: Street, cam: Camera, cond: Condition, rng: np.random.Generator, frame: Frame
                    ) -> None:
    """Cars on the road, pedestrians on the sidewalks and random occluders, drawn with the depth buffer."""
    f, img, emit, depth, illum = frame.rays.f, frame.img, frame.emit, frame.depth, frame.illum
    day_light = frame.day_light
    H, W = depth.shape
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
        p = project(cam, f, W, H, pt, lat, 0.0)
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
            masks = [(box, body), (cab, rgb(0.12, 0.15, 0.2)), (wheel, rgb(0.05, 0.05, 0.05))]
        else:
            height = rng.uniform(1.5, 1.9)
            torso = (ax < 0.25) & (up > 0.45 * height) & (up < 0.8 * height)
            legs = (ax < 0.16) & (up >= 0) & (up <= 0.45 * height)
            head = ax**2 + (up - 0.9 * height) ** 2 < 0.12**2
            masks = [(torso, rng.uniform(0.05, 0.9, size=3)), (legs, rgb(0.15, 0.15, 0.25)),
                     (head, rgb(0.75, 0.6, 0.5))]
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
                emit += blob[..., None] * rgb(1.5, 1.3, 1.0)
    for _ in range(cond.occluders):
        cu, cv = rng.uniform(0, W), rng.uniform(0, H)
        ru, rv = rng.uniform(0.06, 0.2) * W, rng.uniform(0.08, 0.25) * H
        m = ((xx - cu) / ru) ** 2 + ((yy - cv) / rv) ** 2 < 1
        img[m] = rng.uniform(0.05, 0.8, size=3)
        depth[m] = 2.0
        illum[m] = day_light
        emit[m] = 0.0
