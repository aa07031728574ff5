"""The `vpr` command: a thin dispatcher over one module per subcommand in `vpr.commands`.

Each subcommand module has a docstring (its description), ``configure(parser)`` (its options) and
``run(args)``; the one-line summaries live in COMMANDS below. Modules are imported only when their
subcommand is used, so ``vpr --help`` does not pay for importing torch, faiss or snakemake.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading

from vpr import __version__
from vpr.commands.options import check_declared_paths
from vpr.errors import VprError
from vpr.io import hold_signal

# Subcommand name -> (module under vpr.commands, one-line summary). Order is the pipeline order.
COMMANDS: dict[str, tuple[str, str]] = {
    "fetch": ("fetch", "download an input file (checked, atomic, retried) or say where a person gets it"),
    "synth": ("synth", "generate the synthetic Pittsburgh/Tokyo-style data set"),
    "index": ("index", "index one data-set split (.mat or .csv) into an HDF5 index file"),
    "cluster": ("cluster", "compute initial NetVLAD centers (k-means on conv descriptors)"),
    "init-model": ("init_model", "make an off-the-shelf model: trunk + NetVLAD clustered on images"),
    "train": ("train", "train NetVLAD/SARE or one SFRS generation (resumable, torchrun-ready)"),
    "select": ("select", "pick the checkpoint with the best validation Recall@5"),
    "extract": ("extract", "extract database and query descriptors of an index file"),
    "fit-pca": ("fit_pca", "fit PCA-whitening on a features file"),
    "evaluate": ("evaluate", "retrieve with a features file and write the Recall@N table"),
    "describe": ("describe", "compute the descriptor of individual images (or folders of them)"),
    "retrieve": ("retrieve", "rank a database folder (or index) for every query: top-k CSV and pictures"),
    "pairs": ("pairs", "write the top-k of rankings or matches as a query/database pair list (SfM tools)"),
    "table": ("table", "collect recall CSVs into a Markdown/CSV results table with the published numbers"),
    "selection": ("selection", "every epoch checkpoint on validation and test: the model-selection report"),
    "plot": ("plot", "draw Recall@N curves, training curves or example retrievals (PNG)"),
    "check-config": ("check_config", "check YAML files: the line of a syntax error or of a key given twice"),
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the layout of each command's description; append an option's default when it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        no_default = action.default in (None, False, argparse.SUPPRESS)
        if no_default or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpr",
        description="Visual place recognition pipeline: NetVLAD, SARE and SFRS.",
        epilog="Run 'vpr COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"vpr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, summary) in COMMANDS.items():
        if name == command:
            module = importlib.import_module(f"vpr.commands.{module_name}")
            p = sub.add_parser(name, help=summary, description=module.__doc__ or summary,
                               formatter_class=_HelpFormatter)
            module.configure(p)
            p.set_defaults(_run=module.run)
        else:
            sub.add_parser(name, help=summary)
    return parser


class Terminated(BaseException):
    """Raised by a termination signal so that every ``finally`` runs (temporary files are removed).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


_MAIN_PID = os.getpid()


def _raise_terminated(signum, frame):
    if os.getpid() != _MAIN_PID:   # a forked worker (DataLoader) inherited the handler: die as before
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if hold_signal(signum):   # inside an HDF5 write: raised when the file is closed (vpr.io.atomic_h5)
        return
    raise Terminated(signum)


def install_signal_handlers() -> dict:
    """Termination signals raise Terminated; SIGXFSZ is ignored, so that a write past the file-size limit
    (ulimit -f) fails with EFBIG, an OSError reported as one line, instead of killing the process.
    Returns the previous handlers. `vpr train` installs its own SIGTERM handler (a graceful checkpoint)
    for the duration of its loop and restores this one after."""
    global _MAIN_PID
    if threading.current_thread() is not threading.main_thread():
        return {}   # main() called from a thread (embedding): signals stay as they are
    _MAIN_PID = os.getpid()
    previous = {signal.SIGXFSZ: signal.signal(signal.SIGXFSZ, signal.SIG_IGN)}
    for sig in TERMINATION_SIGNALS:
        previous[sig] = signal.signal(sig, _raise_terminated)
    return previous


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format=f"vpr {args.command}: %(levelname)s: %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)   # it logs which CPU build it loaded, at INFO
    previous = install_signal_handlers()
    try:
        check_declared_paths(args)   # every command: no output overwrites an input, each can be written
        if hasattr(args, "max_image_pixels"):   # the commands that read images
            from vpr.data.images import set_max_image_pixels

            set_max_image_pixels(args.max_image_pixels)
        result = args._run(args)
    except VprError as err:
        print(f"vpr {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # SIGINT while the default handler was in place (e.g. restored by a library)
        print(f"vpr {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated as stop:
        print(f"vpr {args.command}: terminated by signal {stop.signum}", file=sys.stderr)
        return 128 + stop.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if hasattr(args, "max_image_pixels"):   # main() called in-process again: the default limit
            from vpr.data.images import set_max_image_pixels

            set_max_image_pixels(None)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
