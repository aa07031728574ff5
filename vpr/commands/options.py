"""Argument helpers shared by the `vpr` subcommands: value types, shared options, and path declarations.

Value types (``positive_int``, ``non_negative_int``, ...) reject a nonsense number at parse time, as a
one-line usage error before any work. Path declarations (``add_input``, ``add_output``,
``add_output_dir``) add an option and record it on the parser, so that `vpr.cli` checks every command's
outputs against its inputs, and that each output can be written, before the command runs
(:func:`check_declared_paths`). This module lives with the commands because it is the command-line
layer: the library under `vpr/` never parses arguments.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path

# Parser defaults that carry the declarations into the parsed namespace.
INPUTS, OUTPUTS, OUTPUT_DIRS = "_inputs", "_outputs", "_output_dirs"


# --- value types ------------------------------------------------------------------------------------

def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0 (worker counts, seeds)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (radii)."""
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def unit_float(text: str) -> float:
    """argparse type: a number in [0, 1] (weights, fractions)."""
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def sha256_hex(text: str) -> str:
    """argparse type: a SHA-256 digest, 64 hexadecimal digits (returned in lower case)."""
    digest = text.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise argparse.ArgumentTypeError(f"expected 64 hexadecimal digits, got {text!r}")
    return digest


def parse_bool(text: str) -> bool:
    """argparse type: true/false, yes/no, on/off or 1/0."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# --- path declarations -----------------------------------------------------------------------------

def _label(action: argparse.Action) -> str:
    return action.option_strings[0] if action.option_strings else (action.metavar or action.dest)


def _declare(parser, key: str, entry: tuple) -> None:
    entries = parser.get_default(key)
    if entries is None:
        entries = []
        parser.set_defaults(**{key: entries})   # argument groups share their parser's defaults
    entries.append(entry)


def add_input(parser, *flags: str, **kwargs) -> argparse.Action:
    """add_argument for an input file (or files: nargs; with nargs=N tuples, the last item is the path)."""
    action = parser.add_argument(*flags, **kwargs)
    _declare(parser, INPUTS, (_label(action), action.dest))
    return action


def add_output(parser, *flags: str, derive: Callable[[argparse.Namespace], object] | None = None,
               **kwargs) -> argparse.Action:
    """add_argument for an output file. ``derive(args)`` gives the path when the option is not given
    (e.g. a default next to another output); it is filled in before the command runs."""
    action = parser.add_argument(*flags, **kwargs)
    _declare(parser, OUTPUTS, (_label(action), action.dest, derive))
    return action


def add_output_dir(parser, *flags: str, writes: Sequence[str] = ("*",), **kwargs) -> argparse.Action:
    """add_argument for an output directory; ``writes`` are glob patterns of the paths the command writes
    inside it (relative, matched against an input's whole relative path or its first component)."""
    action = parser.add_argument(*flags, **kwargs)
    _declare(parser, OUTPUT_DIRS, (_label(action), action.dest, tuple(writes)))
    return action


def _paths(value) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [p for item in value
                for p in _paths(item[-1] if isinstance(item, (list, tuple)) else item)]
    return [Path(value)]


def declared_inputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(option, path) of every input file given on the command line."""
    return [(label, p) for label, dest in getattr(args, INPUTS, []) for p in _paths(getattr(args, dest))]


def check_declared_paths(args: argparse.Namespace) -> None:
    """Fill in derived outputs, then refuse (VprError) an output that is an input, or that cannot be
    written; see vpr.io.check_paths."""
    from vpr.io import check_paths

    for _, dest, derive in getattr(args, OUTPUTS, []):
        if derive is not None and getattr(args, dest, None) is None:
            setattr(args, dest, derive(args))
    inputs = declared_inputs(args)
    outputs = [(label, p) for label, dest, _ in getattr(args, OUTPUTS, [])
               for p in _paths(getattr(args, dest))]
    dirs = [(label, p, writes) for label, dest, writes in getattr(args, OUTPUT_DIRS, [])
            for p in _paths(getattr(args, dest))]
    check_paths(inputs, outputs, dirs)


# --- options shared by several commands -------------------------------------------------------------

def add_max_image_pixels(parser: argparse.ArgumentParser) -> None:
    """--max-image-pixels, for every command that reads images (vpr.cli applies it before the command)."""
    parser.add_argument("--max-image-pixels", type=positive_int, default=None, metavar="N",
                        help="refuse an image of more than N pixels, from its header before decoding it "
                             "(a decompression bomb); default: 100000000 (100 megapixels)")


def add_pca_options(parser: argparse.ArgumentParser) -> None:
    """--pca and --whiten, shared by `vpr extract` and `vpr describe` (see load_model_with_pca)."""
    add_input(parser, "--pca", default=None, help="PCA file to attach (from 'vpr fit-pca'); none by default")
    parser.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=None,
                        help="with --pca: whiten (scale by the eigenvalues^-1/2) or only project "
                             "(default: the PCA file's 'whiten' attribute, on when absent)")
