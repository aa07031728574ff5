"""One reader per data-set format, each returning the ``SplitRecords`` of one split (see ``vpr.data.index``).

Formats and their identity (place id) rules:

* ``pitts`` (Pitts30k/Pitts250k ``.mat``): database images under ``ROOT/Pittsburgh/images/``, queries under
  ``ROOT/Pittsburgh/queries/``. Place = file name up to its first underscore (``000/000123`` for
  ``000/000123_pitch1_yaw3.jpg``: the 24 views of one panorama). Database places are numbered 0..P-1 in
  order of first appearance, query places P.. onward, so a query place never equals a database place.
* ``tokyo247`` (``tokyo247.mat``): database under ``ROOT/tokyo247/images/`` (a name listed as ``.jpg``
  resolves to the ``.png`` on disk when only that exists; this looks at the disk even with
  ``check_images=False``), queries under ``ROOT/tokyo247/query/``.
  Database place = panorama id = path stem up to its last underscore (``03814/381442`` for
  ``03814/381442_05.jpg``: 12 consecutive cut-outs), used by the spatial NMS; if the names carry no
  underscore, blocks of 12 consecutive entries. Query places by exact UTM, in their own namespace.
  The TokyoTM files are not needed.
* ``tokyotm`` (``tokyoTM_train.mat`` / ``tokyoTM_val.mat``): images under ``ROOT/tokyoTM/images/``. The
  query and database lists are concatenated (queries first, repeated paths kept once). **Identity rule
  (deliberate and format-independent): one identity = one (exact UTM, time stamp) pair**, i.e. the images
  of one location captured at one time. Queries and database share this namespace.
  Train: the query set and the database are both the whole list; same-identity images are excluded from
  the positives by ``build_index``. Val: for every location (exact UTM) with more than one time stamp, one
  time-stamp group, drawn with ``numpy.random.default_rng(seed)`` while visiting locations in order of first
  appearance, becomes queries and the others database; single-time-stamp locations are database only.
* ``csv``: ``path,easting,northing,role`` (role ``db`` or ``query``), paths relative to ROOT; place = exact
  UTM, database and query places in separate namespaces.
* ``folders`` (the downloaders' layout): a database and a query folder of images named
  ``@<utm_east>@<utm_north>@...@.jpg``, found recursively or from a ``<folder>_images_paths.txt`` list beside
  the folder; place = exact UTM, database and query places in separate namespaces.

EXIF orientation (:mod:`vpr.data.images`): images of the ``csv`` and ``folders`` formats are read as a photo
viewer shows them (their EXIF Orientation tag applied; the index attribute ``exif_orientation`` is true);
the paper formats keep the reference's behaviour, the pixels as stored (tag ignored).

Every reader keeps the file's image order, validates its input (fields, counts, shapes, finite
coordinates, every image listed once and never both as database image and as query (TokyoTM train, whose
queries are its database by design, excepted), images present on disk as files unless
``check_images=False``) and raises ``VprError`` naming the file and field. Readers never write anything.

One module per format (``pitts``, ``tokyo247``, ``tokyotm``, ``custom_csv``, ``folders``); the ``dbStruct``
field parsing of the .mat formats is ``dbstruct``, the checks and numbering all readers share are ``checks``.
"""

from __future__ import annotations

from collections.abc import Callable

from vpr.data.formats.custom_csv import read_csv
from vpr.data.formats.dbstruct import PITTS_FIELDS, TOKYOTM_FIELDS
from vpr.data.formats.folders import read_folders
from vpr.data.formats.pitts import read_pitts
from vpr.data.formats.tokyo247 import read_tokyo247
from vpr.data.formats.tokyotm import read_tokyotm
from vpr.data.index import SplitRecords

__all__ = ["EXIF_FORMATS", "FORMATS", "MAT_FORMATS", "PITTS_FIELDS", "READERS", "TOKYOTM_FIELDS", "read_csv",
           "read_folders", "read_pitts", "read_tokyo247", "read_tokyotm"]

MAT_FORMATS = ("pitts", "tokyo247", "tokyotm")
FORMATS = (*MAT_FORMATS, "csv", "folders")
# formats whose images are read with their EXIF orientation applied (the paper formats: as stored)
EXIF_FORMATS = ("csv", "folders")
# READERS: the formats read from one split file (folders: read_folders, from two folders)
READERS: dict[str, Callable[..., SplitRecords]] = {
    "pitts": read_pitts,
    "tokyo247": read_tokyo247,
    "tokyotm": read_tokyotm,
    "csv": read_csv,
}
