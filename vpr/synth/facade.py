"""Façade shading: walls with weathering, window grids (lit at night), shop fronts, murals and era-dependent
signs with glyphs, as albedo plus emitted light."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vpr.synth.conditions import Condition
from vpr.synth.numerics import F32, bilerp, hash_u01, mix_into, rgb
from vpr.synth.world import MAX_SIGNS, N_ERAS, FacadeSide


@dataclass
class FacadeHits:
    """Façade points being shaded, one row each: building index, local t within the building (m), height z
    (m), the building's width and height, the anti-alias weight of fine detail, and the albedo and emitted
    light (n, 3) that the painters below update in place."""

    bi: np.ndarray
    lt: np.ndarray
    z: np.ndarray
    bw: np.ndarray
    bh: np.ndarray
    aa: np.ndarray
    col: np.ndarray
    emit: np.ndarray


def shade_facade(fs: FacadeSide, t: np.ndarray, z: np.ndarray, r: np.ndarray, cond: Condition
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
    hits = FacadeHits(bi, lt, z, bw, bh, aa, col, np.zeros_like(col))
    _paint_windows(fs, hits, cond)
    _paint_shop_fronts(fs, hits, cond)
    _paint_murals(fs, hits)
    _paint_signs(fs, hits, cond)
    np.clip(hits.col, 0, 1, out=hits.col)
    return hits.col, hits.emit


def _paint_windows(fs: FacadeSide, hits: FacadeHits, cond: Condition) -> None:
    """The window grid: one window per floor (above the ground floor) and column; some lit at night."""
    bi, lt, z, bw, bh, aa = hits.bi, hits.lt, hits.z, hits.bw, hits.bh, hits.aa
    col, emit = hits.col, hits.emit
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
        mix_into(col, wi, fs.win_col[bwi] * (0.75 + 0.5 * uwin)[:, None], aa[wi])
        if cond.kind != "day":
            lit = uwin < cond.lit_windows
            warm = rgb(1.0, 0.82, 0.5) * (0.55 + 0.45 * hash_u01(bwi[lit], floor[wi][lit], column[wi][lit])
                                          ).astype(F32)[:, None]
            emit[wi[lit]] = warm


def _paint_shop_fronts(fs: FacadeSide, hits: FacadeHits, cond: Condition) -> None:
    """Shop windows and awnings on the ground floor; most shop windows lit at night."""
    bi, lt, z, bw, aa, col, emit = hits.bi, hits.lt, hits.z, hits.bw, hits.aa, hits.col, hits.emit
    shop = fs.has_shop[bi] & (z < 3.3) & (lt > 0.6) & (lt < bw - 0.6)
    si = np.flatnonzero(shop)
    if si.size:
        zs, ls_ = z[si], lt[si]
        glass = si[(zs > 0.3) & (zs < 2.5) & (np.mod(ls_, F32(2.2)) > 0.12)]
        awning = si[(zs >= 2.55) & (zs < 3.2)]
        mix_into(col, glass, rgb(0.12, 0.14, 0.17), 1 - aa[glass] * 0.7)
        col[awning] = fs.shop_col[bi[awning]]
        if cond.kind != "day":
            lit = glass[hash_u01(bi[glass], np.full_like(glass, 3 + fs.uid)) < 0.7]
            emit[lit] = rgb(0.75, 0.68, 0.52)


def _paint_murals(fs: FacadeSide, hits: FacadeHits) -> None:
    """One mural per building at most: a disc, diamond, stripes or ring."""
    bi, lt, z, col = hits.bi, hits.lt, hits.z, hits.col
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


def _paint_signs(fs: FacadeSide, hits: FacadeHits, cond: Condition) -> None:
    """The signs present in the condition's era, with a glyph pattern; glowing after dark."""
    bi, lt, z, aa, col, emit = hits.bi, hits.lt, hits.z, hits.aa, hits.col, hits.emit
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
        if cond.kind != "day":
            emit[idx] = sc * F32(1.3 if cond.kind == "night" else 0.4)
