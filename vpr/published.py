"""Published Recall@N numbers to compare a reproduction against (docs/method.md §5.7).

The only authoritative table of the reference implementation is OpenIBL's MODEL_ZOO.md: models trained on
Pitts30k-train, tested with 4096-d PCA-whitened descriptors. It has SARE_ind and SFRS on Pitts250k-test and
Tokyo 24/7; there are no numbers for NetVLAD, SARE_joint or Pitts30k-test, so those entries are absent
(:func:`published` returns None for them).

Method names: ``netvlad``, ``sare_ind``, ``sare_joint``, ``sfrs``; data-set names: ``pitts30k``,
``pitts250k``, ``tokyo`` (the test split in each case). Values are Recall@N in percent.
"""

from __future__ import annotations

METHOD_NAMES = {"netvlad": "NetVLAD", "sare_ind": "SARE_ind", "sare_joint": "SARE_joint", "sfrs": "SFRS"}
DATASET_NAMES = {"pitts30k": "Pitts30k-test", "pitts250k": "Pitts250k-test", "tokyo": "Tokyo 24/7"}

MODEL_ZOO_SOURCE = ("OpenIBL MODEL_ZOO.md (trained on Pitts30k-train, 4096-d PCA-whitened descriptors; "
                    "the SFRS numbers equal those of Ge et al., ECCV 2020)")

# (method, dataset) -> {N: Recall@N in %}
MODEL_ZOO: dict[tuple[str, str], dict[int, float]] = {
    ("sare_ind", "pitts250k"): {1: 88.4, 5: 95.0, 10: 96.5},
    ("sare_ind", "tokyo"): {1: 81.0, 5: 88.6, 10: 90.2},
    ("sfrs", "pitts250k"): {1: 90.7, 5: 96.4, 10: 97.6},
    ("sfrs", "tokyo"): {1: 85.4, 5: 91.1, 10: 93.3},
}

# data set -> number of test queries, which sets the uncertainty of a published recall (vpr.stats).
# Pitts250k-test and Tokyo 24/7: Arandjelovic et al., "NetVLAD", CVPR 2016, section 5.1 (8,280 and 315
# queries); Pitts30k-test: the query count of NetVLAD's split file pitts30k_test.mat (6,816 queries).
QUERY_COUNTS = {"pitts30k": 6816, "pitts250k": 8280, "tokyo": 315}
QUERY_COUNT_SOURCE = "query counts from Arandjelović et al., NetVLAD, CVPR 2016 and its split files"


def published(method: str, dataset: str) -> dict[int, float] | None:
    """The published {N: Recall@N in %} of ``method`` on ``dataset``, or None when there is none."""
    return MODEL_ZOO.get((method, dataset))


def method_name(method: str) -> str:
    """Display name of a method key (the key itself when it is not a known method)."""
    return METHOD_NAMES.get(method, method)


def dataset_name(dataset: str) -> str:
    """Display name of a data-set key (the key itself when it is not a known data set)."""
    return DATASET_NAMES.get(dataset, dataset)


def query_count(dataset: str) -> int | None:
    """Number of test queries of a published data set (None for other keys)."""
    return QUERY_COUNTS.get(dataset)
