"""Train NetVLAD/SARE (`--method baseline --loss triplet|sare_ind|sare_joint`), one SFRS generation
(`--method sfrs --generation G --teacher CKPT [--temperature T]`), or every SFRS generation in turn
(`--method sfrs --generations all`: OUT/gen0, OUT/gen1, ...; vpr/train/generations.py).

Runs as one process or under torchrun (`torchrun --nproc_per_node=N -m vpr.cli train ...`); the global
batch is tuple_size x processes. Options come from the defaults (the reference scripts), then --config
YAML, then the flags. Writes into --out: checkpoint_e<E>.pth (SFRS: checkpoint_g<G>_e<E>.pth) every
epoch, model_best.pth (best val R@5), last.pth (final epoch), log.csv, and resume.pth. On SIGTERM or
SIGUSR1 the run saves its state at the next iteration and exits with 128+signal; the same command resumes.

The saved state records the options and the content of every input; started again with other options or
inputs, the run refuses (default) or, with --on-mismatch restart, discards the old run and trains afresh.
A finished run recreates missing outputs from its epoch checkpoints. One process at a time works in a run
directory (a lock on OUT/run.lock).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from vpr.commands.options import add_input, add_max_image_pixels, add_output_dir, declared_inputs, parse_bool
from vpr.devices import DEVICE_HELP, DEVICES
from vpr.errors import VprError
from vpr.train.config import RENAMED_OPTIONS, TrainConfig

# What `vpr train` writes in its run directory: an input there matching these would be overwritten.
RUN_DIR_WRITES = ("*.pth", "log.csv")


def configure(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("inputs and outputs")
    add_input(io, "--train-index", help="index file of the training split (vpr index); not needed with "
              "--init-only")
    add_input(io, "--val-index", help="index file of the validation split; not needed with --init-only")
    add_input(io, "--centers", required=True, help="NetVLAD centers file (vpr cluster, or the "
              "reference's *_desc_cen.hdf5)")
    add_input(io, "--trunk", help="pretrained trunk weights (<index>.weight/.bias, e.g. the "
              "MatConvNet VGG16 conversion); default: random initialisation")
    add_input(io, "--teacher", help="SFRS generation >= 1: last.pth of the previous generation")
    add_output_dir(io, "--out", required=True, writes=RUN_DIR_WRITES,
                   help="run directory (checkpoints, log.csv, resume state)")
    add_input(io, "--config", help="YAML file of training options (keys as the flags below, with _)")
    io.add_argument("--root", help="data-set root overriding the one recorded in the index files")
    io.add_argument("--device", choices=DEVICES, default="auto", help=DEVICE_HELP)
    io.add_argument("--init-only", action="store_true",
                    help="write the initial model (trunk + NetVLAD from the centers, no training) to "
                         "OUT/initial.pth and stop: the 'off-the-shelf' row of the results table; needs no "
                         "index, and a --trainable-from that does not fit the backbone is ignored")
    io.add_argument("--on-mismatch", choices=("refuse", "restart"), default="refuse",
                    help="when OUT holds a run of other options or other input files (by content), or a "
                         "finished run whose outputs cannot be recreated: refuse with an error naming what "
                         "differs (default), or restart: remove that run's files and train afresh")
    io.add_argument("--generations", type=_generations, metavar="all|N",
                    help="SFRS without a workflow: train generations 0 .. N-1 (all: one per entry of "
                         "--temperatures) one after another, generation g in OUT/gen<g> learning from "
                         "OUT/gen<g-1>/last.pth; run again, it resumes the interrupted generation and keeps "
                         "the finished ones (replaces --generation and --teacher)")
    add_max_image_pixels(io)
    opts = parser.add_argument_group("training options (default: the reference scripts)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        # SUPPRESS: an option not given stays out of args, so the YAML file and the defaults apply.
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS,
                  "help": f.metadata["help"] + ("" if default is None else f" (default: {default})")}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if isinstance(default, bool):
            kwargs.update(type=parse_bool, metavar="BOOL")
        elif isinstance(default, list):
            kwargs.update(type=type(default[0]), nargs="+")
        else:
            kwargs["type"] = f.metadata.get("type", type(default))
        opts.add_argument(flag, **kwargs)
    for old, new in RENAMED_OPTIONS.items():   # old spellings, still accepted
        opts.add_argument("--" + old.replace("_", "-"), dest=new, default=argparse.SUPPRESS,
                          type=type(getattr(TrainConfig(), new)),
                          help=f"old name of --{new.replace('_', '-')}")


def _save_initial(cfg: TrainConfig, args: argparse.Namespace) -> int:
    """--init-only: the starting point of training (the 'off-the-shelf' model), written by one process."""
    from vpr import distributed
    from vpr.train.trainer import save_initial_model

    info = distributed.init()
    try:
        if info.is_main:
            out = Path(args.out) / "initial.pth"
            out.parent.mkdir(parents=True, exist_ok=True)
            save_initial_model(cfg, args.centers, args.trunk, out)
            print(f"{out}: initial model (no training)")
    finally:
        distributed.cleanup()
    return 0


def _generations(text: str) -> int | str:
    """--generations: 'all' (one per temperature) or a count of at least 1."""
    if text == "all":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected all or a whole number of at least 1, got {text!r}")
    return int(text)


def _schedule(cfg: TrainConfig, args: argparse.Namespace):
    """The SFRS generations of --generations, after refusing what the schedule sets itself."""
    from vpr.io import check_paths
    from vpr.train.generations import SfrsSchedule

    if cfg.method != "sfrs":
        raise VprError("--generations trains SFRS generations; add --method sfrs (a baseline is one run)")
    given = [flag for flag, value in (("--generation", getattr(args, "generation", None)),
                                      ("--temperature", getattr(args, "temperature", None)),
                                      ("--teacher", args.teacher)) if value is not None]
    if given:
        raise VprError(f"--generations sets each generation's {', '.join(given)} itself; leave "
                       f"{'it' if len(given) == 1 else 'them'} out (or train one generation without "
                       "--generations)")
    count = None if args.generations == "all" else args.generations
    schedule = SfrsSchedule(cfg.to_dict(), count, where="--")
    # vpr.cli checked OUT itself; the generations write one folder deeper
    check_paths(declared_inputs(args), [],
                [("--out", Path(args.out) / gen.run_dir, RUN_DIR_WRITES) for gen in schedule])
    return schedule


def run(args: argparse.Namespace) -> int:
    from vpr import distributed
    from vpr.train.config import make_config

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    cfg = make_config(args.config, {k: getattr(args, k) for k in names if hasattr(args, k)})
    if args.init_only:
        return _save_initial(cfg, args)
    if args.train_index is None or args.val_index is None:
        raise VprError("training needs --train-index and --val-index (only --init-only does without)")
    schedule = _schedule(cfg, args) if args.generations is not None else None
    # before the model code is imported: a GPU job without a usable GPU stops within seconds
    info = distributed.init(device=args.device)
    try:
        if schedule is None:
            return _train(cfg, args, info, Path(args.out), args.teacher)
        out = Path(args.out)
        for gen in schedule:
            if info.is_main:
                print(f"SFRS generation {gen.number} of {len(schedule)}: {out / gen.run_dir}")
            teacher = out / gen.teacher if gen.teacher else None
            status = _train(dataclasses.replace(cfg, generation=gen.number, temperature=None), args, info,
                            out / gen.run_dir, teacher)
            if status != 0:
                return status
        return 0
    finally:
        distributed.cleanup()


def _train(cfg: TrainConfig, args: argparse.Namespace, info, out: Path, teacher) -> int:
    """One run (a baseline, or one SFRS generation) in the run directory ``out``, locked meanwhile."""
    from vpr import distributed
    from vpr.data.index import Index
    from vpr.train.checkpointing import RunLock
    from vpr.train.trainer import Trainer

    lock = RunLock(out)
    try:
        train_index = Index(args.train_index, root=args.root)
        val_index = Index(args.val_index, root=args.root)
        # Rank 0 holds the run directory for the whole run; its refusal stops every rank.
        refusal = lock.acquire() if info.is_main else None
        refusal = distributed.broadcast_object(refusal)
        if refusal is not None:
            raise VprError(refusal)
        trainer = Trainer(cfg, train_index, val_index, args.centers, out, trunk=args.trunk,
                          teacher=teacher, info=info, root=args.root)
        return trainer.run(args.on_mismatch)
    finally:
        lock.release()
