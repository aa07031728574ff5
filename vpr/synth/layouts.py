"""Where the synthetic places lie and how they are filed: Pittsburgh, Tokyo 24/7 and TokyoTM layouts.

This module decides the geography (streets in geographically disjoint areas per split, panoramas along them,
query positions), the file names in the style of the real data sets (docs/method.md §1.1-1.3), the
``dbStruct`` .mat files (MATLAB v5, fields in the real order, a fixed header so that files are
byte-identical for one seed) and the ground-truth record. Rendering itself lives in ``renderer``.

Capture model: a street-view car drives along a street (heading along it, either way); every panorama of one
drive shares the day's light, each cut-out gets its own transient distractors. Queries are captured at
another time (another era: some signs changed) and from other positions.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
import scipy.io

from vpr.synth.camera import Camera
from vpr.synth.conditions import Condition, sample_condition, vary_condition
from vpr.synth.numerics import rng_for
from vpr.synth.presets import Preset
from vpr.synth.world import PITTSBURGH, TOKYO, Street, build_street

# UTM areas (zone 17 Pittsburgh, zone 54 Tokyo); every split gets its own easting band.
PITTS_EAST = {"train": (584000.0, 586000.0), "val": (586000.0, 588000.0), "test": (588000.0, 590000.0)}
PITTS_NORTH = (4474000.0, 4480000.0)
TOKYO_EAST = {"tm_train": (380000.0, 383500.0), "tm_val": (383500.0, 386500.0), "247": (386500.0, 390000.0)}
TOKYO_NORTH = (3946000.0, 3952000.0)
CELL = 500.0  # one street per CELL x CELL block, so streets of different blocks are far apart

POS_DIST_THR = 25.0
NON_TRIV_POS_DIST_SQ_THR = 100.0
CAMERA_HEIGHT = 2.5  # street-view car
PHONE_HEIGHT = 1.5
PITCHES = {1: math.radians(4.0), 2: math.radians(26.0)}  # Pittsburgh pitch1 / pitch2 cut-outs
DB_HFOV = math.radians(65.0)
TOKYO_HFOV = math.radians(60.0)
PHONE_VFOV = math.radians(62.0)
YAW_STEP = math.pi / 6  # 12 cut-outs per panorama
# TokyoTM capture dates (YYYYMM) and the season each one shows: 0 summer, 1 autumn, 2 winter.
TM_TIME_STAMPS = (("200805", 0), ("201011", 1), ("201203", 2), ("201408", 0))
MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: vpr synth (synthetic data; fixed header for reproducible files)"
PITTS_DB, PITTS_Q = "pitts/raw/Pittsburgh/images", "pitts/raw/Pittsburgh/queries"
T247_DB, T247_Q = "tokyo/raw/tokyo247/images", "tokyo/raw/tokyo247/query"
TM_IMAGES = "tokyo/raw/tokyoTM/images"


@dataclass
class Job:
    """One image to render and where to write it (relative to the output directory)."""

    rel: str
    street: Street
    camera: Camera
    condition: Condition
    fmt: str  # "jpeg" or "png"


@dataclass
class Listing:
    """The database or the query side of one split, in .mat order, with what the generator knows."""

    fns: list[str] = field(default_factory=list)
    utm: list[tuple[float, float]] = field(default_factory=list)
    place: list[str] = field(default_factory=list)
    scene: list[dict] = field(default_factory=list)
    stamp: list[str] = field(default_factory=list)  # TokyoTM capture dates

    def add(self, fn: str, utm: tuple[float, float], place: str, scene: dict | None = None,
            stamp: str | None = None) -> None:
        self.fns.append(fn)
        self.utm.append(utm)
        self.place.append(place)
        if scene is not None:
            self.scene.append(scene)
        if stamp is not None:
            self.stamp.append(stamp)

    def __add__(self, other: Listing) -> Listing:
        return Listing(self.fns + other.fns, self.utm + other.utm, self.place + other.place,
                       self.scene + other.scene, self.stamp + other.stamp)


@dataclass
class Output:
    """Everything one data set contributes: images to render, .mat files, ground-truth records."""

    jobs: list[Job] = field(default_factory=list)
    mats: dict[str, list[tuple[str, object]]] = field(default_factory=dict)
    truth: dict[str, dict] = field(default_factory=dict)

    def add_split(self, name: str, mat: str, which: str, db: Listing, q: Listing, db_root: str, q_root: str,
                  timed: bool = False, **extra) -> None:
        stamps = {"db_ts": [float(s) for s in db.stamp], "q_ts": [float(s) for s in q.stamp]} if timed else {}
        self.mats[mat] = db_struct(which, db.fns, db.utm, q.fns, q.utm, **stamps)
        self.truth[name] = truth_record(mat, db_root, q_root, db, q) | extra


# ---------------------------------------------------------------------------------------------- helpers


def place_streets(seed: int, label: str, style, east: tuple[float, float], north: tuple[float, float],
                  n: int, length: float) -> list[Street]:
    """``n`` streets of the given length, one per random CELL x CELL block of the area, random directions."""
    rng = rng_for(seed, label, "layout")
    nx, ny = int((east[1] - east[0]) // CELL), int((north[1] - north[0]) // CELL)
    if n > nx * ny:
        raise ValueError(f"{label}: {n} streets do not fit in {nx * ny} blocks")
    streets = []
    for i, cell in enumerate(rng.choice(nx * ny, size=n, replace=False)):
        cx = east[0] + (cell % nx + 0.5) * CELL + rng.uniform(-50, 50)
        cy = north[0] + (cell // nx + 0.5) * CELL + rng.uniform(-50, 50)
        heading = rng.uniform(0, math.pi)
        origin = (cx - length / 2 * math.cos(heading), cy - length / 2 * math.sin(heading))
        streets.append(build_street(rng_for(seed, label, "street", i), style, origin, heading, length))
    return streets


def utm_of(street: Street, t: float, lat: float) -> tuple[float, float]:
    """UTM position rounded to the centimetre, as stored in the .mat files."""
    e, n = street.utm(t, lat)
    return round(float(e), 2), round(float(n), 2)


def car_heading(rng: np.random.Generator) -> float:
    """Heading of a street-view car: along the street, either way, give or take a few degrees."""
    return (0.0 if rng.random() < 0.5 else math.pi) + rng.normal(0, math.radians(4))


def nearest(point: tuple[float, float], points: np.ndarray) -> tuple[int, float]:
    d = np.hypot(points[:, 0] - point[0], points[:, 1] - point[1])
    j = int(np.argmin(d))
    return j, float(d[j])


def id_block(*counts: int) -> int:
    """Width of the id range of one split: a multiple of 1000, so each split starts a fresh directory."""
    return 1000 * max(1, math.ceil(max(counts) / 1000))


def db_struct(which: str, db_fns: list[str], db_utm: list, q_fns: list[str], q_utm: list,
              db_ts: list[float] | None = None, q_ts: list[float] | None = None) -> list[tuple[str, object]]:
    """The fields of a NetVLAD ``dbStruct``, in the order of the real files (time stamps: TokyoTM)."""

    def cell(names: list[str]) -> np.ndarray:
        out = np.empty((len(names), 1), dtype=object)
        for i, name in enumerate(names):
            out[i, 0] = name
        return out

    def utm(points: list) -> np.ndarray:
        return np.asarray(points, dtype=np.float64).reshape(-1, 2).T.copy()

    def scalar(x: float) -> np.ndarray:
        return np.array([[float(x)]])

    fields: list[tuple[str, object]] = [("whichSet", which), ("dbImageFns", cell(db_fns)),
                                        ("utmDb", utm(db_utm))]
    if db_ts is not None:
        fields.append(("dbTimeStamp", np.asarray(db_ts, dtype=np.float64).reshape(1, -1)))
    fields += [("qImageFns", cell(q_fns)), ("utmQ", utm(q_utm))]
    if q_ts is not None:
        fields.append(("qTimeStamp", np.asarray(q_ts, dtype=np.float64).reshape(1, -1)))
    fields += [("numImages", scalar(len(db_fns))), ("numQueries", scalar(len(q_fns))),
               ("posDistThr", scalar(POS_DIST_THR)), ("posDistSqThr", scalar(POS_DIST_THR**2)),
               ("nonTrivPosDistSqThr", scalar(NON_TRIV_POS_DIST_SQ_THR))]
    return fields


def mat_bytes(fields: list[tuple[str, object]]) -> bytes:
    """A MATLAB v5 file with one struct variable ``dbStruct``; the dated text header is replaced by a fixed
    one so that the bytes depend only on the content."""
    record = np.empty((1, 1), dtype=[(name, object) for name, _ in fields])
    for name, value in fields:
        record[0, 0][name] = value
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"dbStruct": record}, format="5", do_compression=False)
    data = bytearray(buf.getvalue())
    data[:116] = MAT_HEADER.ljust(116, b" ")[:116]
    return bytes(data)


def truth_record(mat: str, db_root: str, q_root: str, db: Listing, q: Listing) -> dict:
    """What the generator knows about one split, for tests and for checking an index against."""
    db_utm = np.asarray(db.utm)
    scenes = []
    for i, utm in enumerate(q.utm):
        k, dist = nearest(utm, db_utm)
        scene = dict(q.scene[i]) if q.scene else {}
        scene.update(nearest_db_place=db.place[k], nearest_db_dist=round(dist, 3))
        scenes.append(scene)
    dists = [s["nearest_db_dist"] for s in scenes]
    return {
        "mat": mat, "db_root": db_root, "query_root": q_root,
        "num_db": len(db.fns), "num_queries": len(q.fns),
        "num_db_places": len(set(db.place)), "num_query_places": len(set(q.place)),
        "db_place": db.place, "query_place": q.place, "query_scene": scenes,
        "queries_without_db_within_10m": sum(d > 10.0 for d in dists),
        "queries_without_db_within_25m": sum(d > 25.0 for d in dists),
    }


# ---------------------------------------------------------------------------------------------- Pittsburgh


def pittsburgh(seed: int, preset: Preset) -> Output:
    """pitts30k_{train,val,test} in three disjoint areas, and pitts250k_test: the test area, denser, with
    queries of its own (so that the two test sets are independent samples of queries)."""
    out = Output()
    W, H = preset.db_size
    block = id_block(*(2 * a.streets * a.places_per_street for a in preset.pitts.values()),
                     *(a.queries for a in preset.pitts.values()))
    for split_no, split in enumerate(("train", "val", "test")):
        spec = preset.pitts[split]
        length = (spec.places_per_street - 1) * preset.pitts_spacing
        streets = place_streets(seed, f"pitts-{split}", PITTSBURGH, PITTS_EAST[split], PITTS_NORTH,
                                spec.streets, length)
        rng = rng_for(seed, "pitts", split, "places")
        panos = [(j, i * preset.pitts_spacing + rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5),
                  car_heading(rng)) for j in range(spec.streets) for i in range(spec.places_per_street)]
        db = _pitts_db(out, seed, preset, split, streets, panos, split_no * block)
        q = _pitts_queries(out, seed, preset, split, streets, db, split_no * block, length, rng, W, H)
        name = f"pitts30k_{split}"
        street_ends = [[*s.utm(0.0, 0.0), *s.utm(s.length, 0.0)] for s in streets]
        out.add_split(name, f"pitts/raw/{name}.mat", split, db, q, PITTS_DB, PITTS_Q, street_utm=street_ends)

    # pitts250k_test: the test area again (the loop ended on it: same streets) with one more panorama
    # between every two, and other query panoramas on the same streets (ids after the added panoramas')
    rng = rng_for(seed, "pitts", "test250k", "places")
    extra = [(a[0], (a[1] + b[1]) / 2 + rng.uniform(-1, 1), rng.uniform(-1.5, 1.5), car_heading(rng))
             for a, b in zip(panos[:-1], panos[1:], strict=True) if a[0] == b[0]]
    more = _pitts_db(out, seed, preset, "test", streets, extra, 3 * block)
    q250k = _pitts_queries(out, seed, preset, "test", streets, db + more, 4 * block, length,
                           rng_for(seed, "pitts", "test250k", "queries"), W, H)
    out.add_split("pitts250k_test", "pitts/raw/pitts250k_test.mat", "test", db + more, q250k, PITTS_DB,
                  PITTS_Q, street_utm=street_ends)
    return out


def _pitts_db(out: Output, seed: int, preset: Preset, split: str, streets: list[Street], panos: list,
              first_id: int) -> Listing:
    W, H = preset.db_size
    # one drive (capture session) per street: similar light for all its panoramas
    drives = [sample_condition(rng_for(seed, "pitts-drive", split, j), "day", era=0)
              for j in range(len(streets))]
    db = Listing()
    for n, (j, t, lat, heading) in enumerate(panos):
        pid = first_id + n
        utm = utm_of(streets[j], t, lat)
        pano_cond = vary_condition(drives[j], rng_for(seed, "pitts-pano", pid), light=0.1)
        for pitch, yaw in preset.pitts_db_views:
            fn = f"{pid // 1000:03d}/{pid:06d}_pitch{pitch}_yaw{yaw}.jpg"
            yaw_rad = heading + (yaw - 1) * YAW_STEP
            cam = Camera(t, lat, CAMERA_HEIGHT, yaw_rad, PITCHES[pitch], 0.0, DB_HFOV, W, H)
            cond = vary_condition(pano_cond, rng_for(seed, "pitts-db", fn))
            out.jobs.append(Job(f"{PITTS_DB}/{fn}", streets[j], cam, cond, "jpeg"))
            db.add(fn, utm, fn.split("_")[0])
    return db


def _pitts_queries(out: Output, seed: int, preset: Preset, split: str, streets: list[Street], db: Listing,
                   first_id: int, length: float, rng: np.random.Generator, W: int, H: int) -> Listing:
    """Query panoramas at random positions of the same streets, captured at another time. The last few
    training ones lie 10-25 m beyond a street's end: no database image within 10 m (the index drops them)."""
    spec = preset.pitts[split]
    pano_utm = np.asarray(db.utm)
    q = Listing()
    for n in range(spec.queries):
        far = split == "train" and (n + 1) / spec.queries > 1 - preset.pitts_train_far_queries
        for _ in range(1000):
            j = int(rng.integers(len(streets)))
            if far:
                beyond = rng.uniform(11.0, 20.0)
                t = -beyond if rng.random() < 0.5 else length + beyond
            else:
                t = rng.uniform(-3.0, length + 3.0)
            lat = rng.uniform(-2.5, 2.5)
            utm = utm_of(streets[j], t, lat)
            dist = nearest(utm, pano_utm)[1]
            if (10.5 < dist < 24.0) if far else dist < 10.0:
                break
        else:  # pragma: no cover - the geometry makes this unreachable
            raise RuntimeError("could not place a query")
        qid = first_id + n
        heading = car_heading(rng)
        # the real data have all 12 yaws on both sides; with fewer database yaws, queries use the same ones
        db_yaws = sorted({yaw for _, yaw in preset.pitts_db_views})
        yaws = sorted(rng.choice(db_yaws, size=preset.pitts_query_views, replace=False).tolist())
        kind = "sunset" if rng.random() < 0.1 else "day"
        q_cond = sample_condition(rng_for(seed, "pitts-qpano", qid), kind, era=1)
        for yaw in yaws:
            fn = f"{qid // 1000:03d}/{qid:06d}_pitch1_yaw{yaw}.jpg"
            pitch = PITCHES[1] + rng.normal(0, math.radians(1.5))
            hfov = DB_HFOV * rng.uniform(0.9, 1.1)
            cam = Camera(t, lat, CAMERA_HEIGHT, heading + (yaw - 1) * YAW_STEP, pitch, 0.0, hfov, W, H)
            cond = vary_condition(q_cond, rng_for(seed, "pitts-q", fn))
            out.jobs.append(Job(f"{PITTS_Q}/{fn}", streets[j], cam, cond, "jpeg"))
            scene = {"street": j, "t": round(t, 3), "lat": round(lat, 3), "kind": kind}
            q.add(fn, utm, fn.split("_")[0], scene)
    return q


# ---------------------------------------------------------------------------------------------- Tokyo


def tokyo(seed: int, preset: Preset) -> Output:
    """tokyo247 (test) and tokyoTM_{train,val}, in three disjoint areas."""
    out = Output()
    _tokyo247(out, seed, preset)
    for split_no, split in enumerate(("train", "val")):
        _tokyo_tm(out, seed, preset, split, split_no)
    return out


def _tokyo247(out: Output, seed: int, preset: Preset) -> None:
    spec, spacing = preset.tokyo247, preset.tokyo247_spacing
    W, H = preset.db_size
    length = (spec.places_per_street - 1) * spacing
    streets = place_streets(seed, "tokyo247", TOKYO, TOKYO_EAST["247"], TOKYO_NORTH, spec.streets, length)
    rng = rng_for(seed, "tokyo247", "places")
    db, pano_of_image, pano_utm = Listing(), [], []
    for j, street in enumerate(streets):
        drive = sample_condition(rng_for(seed, "tokyo247-drive", j), "day", era=0)
        for i in range(spec.places_per_street):
            pid = len(pano_utm)
            t, lat, heading = i * spacing + rng.uniform(-2, 2), rng.uniform(-1.5, 1.5), car_heading(rng)
            pano_cond = vary_condition(drive, rng_for(seed, "tokyo247-pano", pid), light=0.1)
            utm = utm_of(street, t, lat)
            pano_utm.append(utm)
            for k in range(12):  # 12 yaw cut-outs per panorama, listed consecutively; several per directory
                fn = f"{pid // 4:05d}/{pid:06d}_{k:02d}.jpg"
                cam = Camera(t, lat, CAMERA_HEIGHT, heading + k * YAW_STEP, PITCHES[1], 0.0, TOKYO_HFOV, W, H)
                cond = vary_condition(pano_cond, rng_for(seed, "tokyo247-db", fn))
                # listed as .jpg, stored as .png (like the real data)
                out.jobs.append(Job(f"{T247_DB}/{fn[:-4]}.png", street, cam, cond, "png"))
                db.add(fn, utm, fn.rsplit("_", 1)[0])
                pano_of_image.append(pid)
    q = Listing()
    for spot in range(spec.queries):
        street, j, t, lat, yaw = _phone_spot(rng, streets, np.asarray(pano_utm), length)
        utm = utm_of(street, t, lat)
        pitch = math.radians(rng.uniform(0, 10))
        w, h = preset.tokyo_query_sizes[int(rng.integers(len(preset.tokyo_query_sizes)))]
        hfov = 2 * math.atan(w / h * math.tan(PHONE_VFOV / 2))
        for c, kind in enumerate(("day", "sunset", "night")):  # one spot, three times of day, one UTM
            fn = f"{3 * spot + c:05d}.jpg"
            cam = Camera(t + rng.uniform(-0.5, 0.5), lat + rng.uniform(-0.3, 0.3), PHONE_HEIGHT,
                         yaw + rng.normal(0, math.radians(4)), pitch + rng.normal(0, math.radians(2)),
                         rng.normal(0, math.radians(2)), hfov, w, h)
            cond = sample_condition(rng_for(seed, "tokyo247-q", fn), kind, era=2, clutter=1.3)
            out.jobs.append(Job(f"{T247_Q}/{fn}", street, cam, cond, "jpeg"))
            q.add(fn, utm, f"{utm[0]}_{utm[1]}", {"street": j, "t": round(t, 3), "lat": round(lat, 3),
                                                  "kind": kind, "spot": spot, "size": [w, h]})
    out.add_split("tokyo247", "tokyo/raw/tokyo247.mat", "test", db, q, T247_DB, T247_Q,
                  db_panorama=pano_of_image, num_panoramas=len(pano_utm))


def _phone_spot(rng: np.random.Generator, streets: list[Street], pano_utm: np.ndarray, length: float
                ) -> tuple[Street, int, float, float, float]:
    """A photographer on a sidewalk, near a database panorama, looking along or across the street (not at
    the wall in front of them)."""
    for _ in range(1000):
        j = int(rng.integers(len(streets)))
        street = streets[j]
        t = rng.uniform(-4.0, length + 4.0)
        side = 1.0 if rng.random() < 0.5 else -1.0
        lat = side * (street.half_width - rng.uniform(0.5, TOKYO.sidewalk - 0.3))
        if nearest(utm_of(street, t, lat), pano_utm)[1] < 15.0:
            break
    else:  # pragma: no cover
        raise RuntimeError("could not place a query")
    for _ in range(1000):
        yaw = rng.uniform(0, 2 * math.pi)
        across = math.sin(yaw)
        wall = math.inf if abs(across) < 1e-6 else (math.copysign(street.half_width, across) - lat) / across
        if wall > 8.0:
            break
    return street, j, t, lat, yaw


def _tokyo_tm(out: Output, seed: int, preset: Preset, split: str, split_no: int) -> None:
    """Places revisited on several capture dates. File names ``<dir>/<place>/<date>/<place>_<date>_<k>.jpg``:
    the reference's place key is the 2nd path component, the time-stamp key the 3rd. In the .mat, the latest
    capture of every place seen more than once is listed as queries, the rest as database."""
    spec, spacing = preset.tm[split], preset.tm_spacing
    W, H = preset.db_size
    length = (spec.places_per_street - 1) * spacing
    streets = place_streets(seed, f"tokyoTM-{split}", TOKYO, TOKYO_EAST[f"tm_{split}"], TOKYO_NORTH,
                            spec.streets, length)
    rng = rng_for(seed, "tokyoTM", split, "places")
    block = id_block(*(a.streets * a.places_per_street for a in preset.tm.values()))
    n_ts_p = (0.3, 0.4, 0.3) if split == "train" else (0.15, 0.45, 0.4)
    drives = {}  # one drive per (street, capture date): the light and season of that day
    for j in range(spec.streets):
        for e, (_, season) in enumerate(TM_TIME_STAMPS):
            drive_rng = rng_for(seed, "tokyoTM-drive", split, j, e)
            kind = "sunset" if drive_rng.random() < 0.15 else "day"
            drives[(j, e)] = sample_condition(drive_rng, kind, era=e, season=season)
    db, q = Listing(), Listing()
    n_places = spec.streets * spec.places_per_street
    n_groups = 0
    for n in range(n_places):
        j, i = divmod(n, spec.places_per_street)
        pid = split_no * block + n
        t, lat = i * spacing + rng.uniform(-3, 3), rng.uniform(-1.5, 1.5)
        utm = utm_of(streets[j], t, lat)
        n_ts = int(rng.choice([1, 2, 3], p=n_ts_p))
        if n == 0 and split == "val":
            n_ts = max(n_ts, 2)  # val must have places seen at more than one time
        for rank, e in enumerate(np.sort(rng.choice(len(TM_TIME_STAMPS), size=n_ts, replace=False))):
            ts = TM_TIME_STAMPS[e][0]
            heading = car_heading(rng)
            # the captures of one place differ a little in position; their recorded UTM does not
            dt, dl = rng.uniform(-0.7, 0.7), rng.uniform(-0.5, 0.5)
            group_rng = rng_for(seed, "tokyoTM-group", pid, ts)
            group_cond = vary_condition(drives[(j, int(e))], group_rng, light=0.1)
            listing = q if n_ts > 1 and rank == n_ts - 1 else db
            n_groups += 1
            for k in preset.tm_views:
                fn = f"{pid // 100:05d}/{pid:07d}/{ts}/{pid:07d}_{ts}_{k:02d}.jpg"
                cam = Camera(t + dt, lat + dl, CAMERA_HEIGHT, heading + k * YAW_STEP, PITCHES[1], 0.0,
                             TOKYO_HFOV, W, H)
                cond = vary_condition(group_cond, rng_for(seed, "tokyoTM", fn))
                out.jobs.append(Job(f"{TM_IMAGES}/{fn}", streets[j], cam, cond, "jpeg"))
                listing.add(fn, utm, f"{pid:07d}", stamp=ts)
    name = f"tokyoTM_{split}"
    out.add_split(name, f"tokyo/raw/{name}.mat", split, db, q, TM_IMAGES, TM_IMAGES, timed=True,
                  db_time_stamp=db.stamp, query_time_stamp=q.stamp, num_places=n_places,
                  num_place_time_groups=n_groups, places_with_several_time_stamps=len(set(q.place)))
