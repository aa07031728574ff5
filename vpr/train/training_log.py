"""The training log ``log.csv`` of `vpr train`: its columns, its writer and its reader.

One row per validation (``LOG_FIELDS``): SFRS generation, epoch, the epoch's mean loss (total, hard, soft),
learning rate, Recall@1/5/10 on the validation split with their 95 % intervals (``recall@N_ci_low`` /
``_ci_high``, :mod:`vpr.stats`), and the seconds spent mining, training and validating. The reader needs
only ``TRAINING_LOG_COLUMNS`` (what the training curves plot).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

from vpr.errors import VprError
from vpr.io import atomic_output, open_temporary
from vpr.stats import interval_column_names

RECALL_AT = (1, 5, 10)
LOG_FIELDS = ["generation", "epoch", "loss", "loss_hard", "loss_soft", "lr", "recall@1", "recall@5",
              "recall@10", *interval_column_names(RECALL_AT), "mining_s", "train_s", "val_s"]
# the columns a training log must have to be read (the training curves plot these, with their intervals)
TRAINING_LOG_COLUMNS = ("generation", "epoch", "loss", "recall@1", "recall@5",
                        *interval_column_names((1, 5)))


def write_training_log(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write ``rows`` (dicts keyed by :data:`LOG_FIELDS`) as the training log ``path``, atomically."""
    with atomic_output(path) as tmp, open_temporary(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def read_training_log(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a training ``log.csv`` as floats (the columns :data:`TRAINING_LOG_COLUMNS`), in file
    order."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            rows = list(reader)
    except FileNotFoundError:
        raise VprError(f"{path}: training log not found (written by 'vpr train' as log.csv)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise VprError(f"{path}: unreadable training log ({err})") from None
    missing = [c for c in TRAINING_LOG_COLUMNS if c not in fields]
    if missing:
        raise VprError(f"{path}: not a training log: column(s) {', '.join(missing)} missing")
    out = []
    for line, row in enumerate(rows, start=2):
        try:
            values = {c: float(row[c]) for c in TRAINING_LOG_COLUMNS}
        except (TypeError, ValueError):
            raise VprError(f"{path}: malformed row {line}: non-numeric value in "
                           f"{', '.join(TRAINING_LOG_COLUMNS)}") from None
        if not values["epoch"].is_integer() or not values["generation"].is_integer():
            raise VprError(f"{path}: row {line}: epoch and generation must be integers")
        out.append(values)
    if not out:
        raise VprError(f"{path}: the training log has no rows")
    return out
