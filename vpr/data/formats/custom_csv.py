"""The ``csv`` reader: a custom split from a CSV ``path,easting,northing,role`` (UTM metres) or
``path,lat,lon,role`` (WGS84 degrees, projected to UTM here); see ``vpr.data.formats``.

Coordinates that look like degrees under the ``easting,northing`` header (every value within ±180 and ±90)
are refused: read as metres, a whole city would fit in a 25 m radius and every database image would be a
positive of every query. Degrees are projected with the ``utm`` package into ONE zone per file: the zone
of most of its points, so that distances across a zone boundary stay continuous; a point more than
:data:`MAX_DEGREES_OUTSIDE_ZONE` of longitude outside that zone (scale error above ~0.3 %) is refused.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path, PurePosixPath

import numpy as np

from vpr.data.formats.checks import DiskView, check_distinct, check_image_files, number_keys, resolve_split
from vpr.data.index import SplitRecords
from vpr.errors import VprError
from vpr.io import require_file

CSV_HEADER = ("path", "easting", "northing", "role")
LATLON_HEADER = ("path", "lat", "lon", "role")
COORDS = ("auto", "utm", "latlon")  # --coords: from the header, or asserted
MAX_DEGREES_OUTSIDE_ZONE = 1.0


def _looks_like_degrees(xy: list[tuple[float, float]]) -> bool:
    return bool(xy) and all(abs(e) <= 180 and abs(n) <= 90 for e, n in xy)


def latlon_to_utm(latlon: np.ndarray, source: str) -> tuple[np.ndarray, str]:
    """(N, 2) latitude, longitude in degrees -> (N, 2) easting, northing in metres, all in the UTM zone and
    hemisphere of most points (continuous across zone boundaries and the equator), and the zone's name."""
    import utm

    lat, lon = latlon[:, 0], latlon[:, 1]
    bad = np.flatnonzero((np.abs(lat) > 84) | (np.abs(lon) > 180))
    if bad.size:
        raise VprError(f"{source}: latitude {lat[bad[0]]:g}, longitude {lon[bad[0]]:g} (row {bad[0] + 1} of "
                       "the data) is outside the UTM range (latitude within ±84, longitude within ±180)")
    zones = [utm.latlon_to_zone_number(float(a), float(o)) for a, o in zip(lat, lon, strict=True)]
    zone = max(dict.fromkeys(zones), key=zones.count)   # the majority; a tie goes to the first listed
    west = utm.zone_number_to_central_longitude(zone) - 3
    outside = np.maximum(west - lon, lon - (west + 6))
    far = np.flatnonzero(outside > MAX_DEGREES_OUTSIDE_ZONE)
    if far.size:
        raise VprError(f"{source}: the points span UTM zones too far apart for one projection (most are in "
                       f"zone {zone}; longitude {lon[far[0]]:g} lies {outside[far[0]]:.1f} degrees outside "
                       "it): split the data set by zone")
    north = bool(np.count_nonzero(lat >= 0) * 2 >= lat.size)
    east, northing, _, _ = utm.from_latlon(lat, lon, force_zone_number=zone, force_northern=north)
    return np.stack([east, northing], axis=1), f"{zone}{'N' if north else 'S'}"


def read_csv(csv_file: str | os.PathLike, root: str | os.PathLike, *, split: str | None = None,
             check_images: bool = True, coords: str = "auto") -> SplitRecords:
    """A custom split from a CSV ``path,easting,northing,role`` or ``path,lat,lon,role``; see the module
    docstring. ``coords``: "auto" (the header says), "utm" or "latlon" (the header must agree)."""
    csv_file = Path(csv_file)
    source = str(csv_file)
    split = resolve_split("test", split, source)
    require_file(csv_file)
    rows: dict[str, tuple[list[str], list[tuple[float, float]]]] = {"db": ([], []), "query": ([], [])}
    lines: dict[str, list[int]] = {"db": [], "query": []}  # file line of every row, for messages
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            names = tuple(h.strip() for h in header) if header is not None else None
            if names not in (CSV_HEADER, LATLON_HEADER):
                raise VprError(f"{source} line 1: header must be {','.join(CSV_HEADER)!r} (UTM metres) or "
                               f"{','.join(LATLON_HEADER)!r} (degrees), found {','.join(header or [])!r}")
            degrees = names == LATLON_HEADER
            if coords != "auto" and degrees != (coords == "latlon"):
                fix = "name the columns lat,lon (latitude first)" if degrees is False else "drop --coords utm"
                raise VprError(f"{source} line 1: --coords {coords} but the header is "
                               f"{','.join(names)!r}; {fix}")
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(CSV_HEADER):
                    raise VprError(f"{source} line {line}: expected {len(CSV_HEADER)} columns, "
                                   f"found {len(row)}")
                path, east, north, role = (c.strip() for c in row)
                if role not in rows:
                    raise VprError(f"{source} line {line}: role {role!r} is neither 'db' nor 'query'")
                if not path or PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
                    raise VprError(f"{source} line {line}: path {path!r} must be relative to the root")
                try:
                    xy = (float(east), float(north))
                except ValueError:
                    raise VprError(f"{source} line {line}: coordinates {east!r}, {north!r} are not numbers") \
                        from None
                if not all(math.isfinite(v) for v in xy):
                    raise VprError(f"{source} line {line}: coordinates {east!r}, {north!r} are not finite")
                rows[role][0].append(path)
                rows[role][1].append(xy)
                lines[role].append(line)
    except UnicodeDecodeError as err:
        raise VprError(f"{source}: not a UTF-8 text file ({err})") from err
    (db_path, db_xy), (q_path, q_xy) = rows["db"], rows["query"]
    def where(role: str, i: int) -> str:
        return f"line {lines[role][i]}"

    extra = {}
    if degrees:
        both, zone = latlon_to_utm(np.asarray(db_xy + q_xy, dtype=np.float64).reshape(-1, 2), source)
        db_xy, q_xy = [tuple(p) for p in both[:len(db_xy)]], [tuple(p) for p in both[len(db_xy):]]
        extra = {"coords": "latlon", "utm_zone": zone}
    elif _looks_like_degrees(db_xy + q_xy):
        first = min(lines["db"][:1] + lines["query"][:1])
        raise VprError(f"{source} line {first}: every easting and northing lies within ±180 and ±90: these "
                       "look like longitude/latitude in degrees, not UTM metres (every image would be within "
                       "metres of every other); if they are degrees, name the columns path,lat,lon,role "
                       "(latitude first) and vpr projects them to UTM; if they are metres of a local frame, "
                       "add a constant (e.g. 1000) to every coordinate")
    check_distinct(db_path, q_path, source, where)
    if check_images:
        check_image_files(DiskView(Path(root)), db_path, q_path, source, where)
    db_place = number_keys(db_xy)
    q_place = number_keys(q_xy, start=int(db_place.max(initial=-1)) + 1)
    return SplitRecords(split, db_path, np.asarray(db_xy, dtype=np.float64).reshape(-1, 2), db_place,
                        q_path, np.asarray(q_xy, dtype=np.float64).reshape(-1, 2), q_place, extra)

