"""Size presets of the synthetic data set: ``tiny`` (tests, seconds) and ``demo`` (README demo, ~1 min)."""

from __future__ import annotations

from dataclasses import dataclass

from vpr.errors import VprError


@dataclass(frozen=True)
class AreaSpec:
    """One geographically separate area: how many streets, places per street, query spots."""

    streets: int
    places_per_street: int
    queries: int  # Pittsburgh: query panoramas; Tokyo 24/7: query spots (3 photos each); TokyoTM: unused


@dataclass(frozen=True)
class Preset:
    name: str
    db_size: tuple[int, int]  # database image (W, H); 4:3, multiples of 8
    tokyo_query_sizes: tuple[tuple[int, int], ...]  # (W, H) choices for Tokyo 24/7 phone photos
    pitts: dict[str, AreaSpec]  # train / val / test
    pitts_spacing: float  # metres between database panoramas along a street
    pitts_db_views: tuple[tuple[int, int], ...]  # (pitch, yaw) indices (1-based, yaw of 12) per panorama
    pitts_query_views: int  # views (random yaws) per query panorama
    pitts_train_far_queries: float  # fraction of training query panoramas with no database image within 10 m
    tokyo247: AreaSpec
    tokyo247_spacing: float
    tm: dict[str, AreaSpec]  # train / val
    tm_spacing: float
    tm_views: tuple[int, ...]  # yaw cut-outs (0-based, of 12) per TokyoTM panorama
    jpeg_quality: int = 90


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        db_size=(160, 120),
        tokyo_query_sizes=((120, 160), (120, 160), (192, 144)),
        pitts={"train": AreaSpec(3, 5, 7), "val": AreaSpec(2, 6, 5), "test": AreaSpec(2, 6, 5)},
        pitts_spacing=10.0,
        pitts_db_views=((1, 1), (1, 4), (1, 7), (1, 10)),
        pitts_query_views=2,
        pitts_train_far_queries=0.1,
        tokyo247=AreaSpec(2, 3, 5),
        tokyo247_spacing=14.0,
        tm={"train": AreaSpec(2, 4, 0), "val": AreaSpec(2, 3, 0)},
        tm_spacing=12.0,
        tm_views=(0, 4, 8),
    ),
    "demo": Preset(
        name="demo",
        db_size=(224, 168),
        tokyo_query_sizes=((168, 224), (168, 224), (256, 192)),
        pitts={"train": AreaSpec(10, 12, 80), "val": AreaSpec(5, 12, 100), "test": AreaSpec(5, 12, 150)},
        pitts_spacing=10.0,
        pitts_db_views=((1, 1), (1, 3), (1, 5), (1, 7), (1, 9), (1, 11)),
        pitts_query_views=2,
        pitts_train_far_queries=0.06,
        tokyo247=AreaSpec(5, 6, 100),
        tokyo247_spacing=14.0,
        tm={"train": AreaSpec(8, 8, 0), "val": AreaSpec(4, 6, 0)},
        tm_spacing=12.0,
        tm_views=(0, 3, 6, 9),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise VprError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
