"""Training configuration: one dataclass, defaults = the reference scripts (docs/method.md §4).

Values come from, in increasing priority: these defaults, a YAML file (`--config`), command-line flags.
Unknown keys and wrong types are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from vpr.errors import VprError
from vpr.losses import SARE_FORMS, TUPLE_LOSSES
from vpr.numeric_precision import PRECISIONS
from vpr.train.generations import DEFAULT_TEMPERATURES, teacher_temperature, used_options
from vpr.yamlfile import YamlFileError, load_yaml

TRAIN_METHODS = ("baseline", "sfrs")
TRAIN_PRECISIONS = tuple(p for p in PRECISIONS if p != "fp16")   # fp16 would need gradient scaling
# Options that do not change the trained weights: a resumed run may change them.
RUNTIME_ONLY = ("workers", "extract_batch_size", "print_freq")
# Options renamed before the first release, old name: new name (the old name is still accepted).
RENAMED_OPTIONS = {"test_batch_size": "extract_batch_size"}
SEED_MAX = 2**32 - 1   # NumPy takes seeds in [0, 2**32 - 1]


def _opt(default, help: str, **kw):
    """A config field with its --help text; list defaults are copied per instance."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    # What is trained.
    method: str = _opt("baseline", "baseline (NetVLAD/SARE losses) or sfrs", choices=TRAIN_METHODS)
    loss: str = _opt("triplet", "loss; for sfrs the hard loss (the reference uses sare_ind)",
                     choices=TUPLE_LOSSES)
    loss_form: str = _opt("dot", "SARE logits: dot (<q,x>/tau, produced the published numbers) or "
                                 "euclidean (-||q-x||^2)", choices=SARE_FORMS)
    tau: float = _opt(0.07, "SARE dot-form temperature; the SFRS student temperature tau_0")
    margin: float = _opt(0.1, "triplet margin m (the reference form uses sqrt(m) on plain distances)")
    triplet_squared: bool = _opt(False, "triplet in the NetVLAD paper form: squared distances, margin m, "
                                        "sum over negatives")
    generation: int = _opt(0, "SFRS generation trained by this invocation (0 = first)")
    temperatures: list[float] = _opt(list(DEFAULT_TEMPERATURES), "SFRS teacher temperature per generation: "
                                     "generation G >= 1 uses entry G (unless --temperature)")
    temperature: float | None = _opt(None, "SFRS teacher temperature of this --generation (>= 1); replaces "
                                           "entry G of --temperatures", type=float)
    soft_weight: float = _opt(0.5, "SFRS soft-loss weight lambda for generations >= 1")

    # Model.
    backbone: str = _opt("vgg16", "backbone: vgg16 (the paper), small (CPU demos and tests), "
                                  "efficientnet_lite0 (ImageNet weights from its installed package), "
                                  "resnet18 or resnet50 (cut after layer3)")
    num_clusters: int = _opt(64, "NetVLAD clusters K (must match the centers file)")
    trainable_from: str = _opt("conv5", "first trainable block: conv5, conv4, conv3, conv2 or full (vgg16, "
                                        "small); block0 .. block10 or full (efficientnet_lite0); layer3, "
                                        "layer2, layer1 or full (resnet18, resnet50)")
    image_size: list[int] = _opt([480, 640], "training and validation image size H W")

    # Optimisation (reference scripts).
    lr: float = _opt(1e-3, "SGD learning rate")
    momentum: float = _opt(0.9, "SGD momentum")
    weight_decay: float = _opt(1e-3, "SGD weight decay")
    step_size: int = _opt(5, "StepLR: epochs between learning-rate decays")
    gamma: float = _opt(0.5, "StepLR decay factor")
    epochs: int = _opt(5, "epochs per run (per SFRS generation >= 1)")
    gen0_epochs: int = _opt(1, "epochs of SFRS generation 0")
    seed: int = _opt(43, "seed of every random choice (mining, jitter, initialisation)")

    # Tuples and mining.
    tuple_size: int = _opt(1, "tuples per process per step (global batch = tuple_size x processes)")
    neg_num: int = _opt(10, "negatives per tuple")
    neg_pool: int = _opt(1000, "random true negatives drawn per anchor before taking the hardest")
    cache_size: int = _opt(1000, "training queries between two feature refreshes")
    pos_num: int = _opt(10, "SFRS difficult positives per tuple (at most)")
    pos_pool: int = _opt(20, "SFRS: Euclidean-nearest positives considered")
    rerank_k1: int = _opt(20, "SFRS k-reciprocal re-ranking k1")
    rerank_k2: int = _opt(1, "SFRS k-reciprocal re-ranking k2")
    rerank_lambda: float = _opt(0.1, "SFRS k-reciprocal re-ranking lambda")
    iters: int = _opt(0, "if > 0, a fixed number of steps per chunk instead of all its anchors")
    color_jitter: bool = _opt(True, "reference colour jitter on training images (docs/method.md §1.5)")

    # Loading and evaluation.
    workers: int = _opt(2, "DataLoader worker processes per training process")
    extract_batch_size: int = _opt(16, "batch size of feature extraction (mining refresh, validation)")
    # bf16 autocast moved the triplet loss of a fixed tuple by 1.3e-2 (small) and 3.9e-2 (VGG16) relative
    # to float32, above the 1e-3 tolerance (benchmarks/README.md), so the training forward defaults to fp32.
    precision: str = _opt("fp32", "backbone precision of the training forward and backward: fp32 (TF32 off "
                                  "on CUDA), tf32 (CUDA), bf16 or auto (bf16 where the hardware is fast at "
                                  "it)", choices=TRAIN_PRECISIONS)
    extract_precision: str = _opt("auto", "backbone precision of the extraction for mining and validation: "
                                          "fp32, tf32 (CUDA), bf16, fp16 (CUDA) or auto; descriptors stay "
                                          "float32",
                                  choices=PRECISIONS)
    print_freq: int = _opt(0, "print the running loss every this many iterations (0: only the progress bar)")

    @property
    def epochs_this_run(self) -> int:
        return self.gen0_epochs if self.method == "sfrs" and self.generation == 0 else self.epochs

    @property
    def teacher_temperature(self) -> float | None:
        """The soft loss's teacher temperature of this SFRS generation (``temperature``, else entry
        ``generation`` of ``temperatures``)."""
        return teacher_temperature(self.to_dict())

    def validate(self) -> TrainConfig:
        def bad(key, msg):
            raise VprError(f"training config: {key}: {msg}")

        if self.method not in TRAIN_METHODS:
            bad("method", f"{self.method!r} is not one of {', '.join(TRAIN_METHODS)}")
        if self.loss not in TUPLE_LOSSES:
            bad("loss", f"{self.loss!r} is not one of {', '.join(TUPLE_LOSSES)}")
        if self.loss_form not in SARE_FORMS:
            bad("loss_form", f"{self.loss_form!r} is not one of {', '.join(SARE_FORMS)}")
        if self.method == "sfrs" and self.generation >= 1 and self.teacher_temperature is None:
            bad("generation", f"{self.generation} needs a teacher temperature (temperatures has "
                              f"{len(self.temperatures)} entries; or give temperature)")
        if self.temperature is not None and not (self.method == "sfrs" and self.generation >= 1):
            bad("temperature", "only an SFRS generation >= 1 learns from a teacher (generation 0 and the "
                               "baselines have none); leave it out")
        if self.precision == "fp16":
            bad("precision", "fp16 training needs gradient scaling, which is not implemented; use bf16 "
                             "(as fast on GPUs that have it) or fp32")
        if self.precision not in TRAIN_PRECISIONS:
            bad("precision", f"{self.precision!r} is not one of {', '.join(TRAIN_PRECISIONS)}")
        if self.extract_precision not in PRECISIONS:
            bad("extract_precision", f"{self.extract_precision!r} is not one of {', '.join(PRECISIONS)}")
        if len(self.image_size) != 2:
            bad("image_size", "expected [height, width]")
        # NaN and infinities first (YAML `.nan`, `--lr inf`): no range check below would catch a NaN.
        for f in fields(self):
            value = getattr(self, f.name)
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, float) and not math.isfinite(v):
                    bad(f.name, f"must be a finite number, got {v}")
        for key in ("epochs", "gen0_epochs", "tuple_size", "neg_num", "neg_pool", "cache_size", "pos_num",
                    "pos_pool", "step_size", "rerank_k1", "rerank_k2", "num_clusters", "extract_batch_size"):
            if getattr(self, key) < 1:
                bad(key, f"must be at least 1, got {getattr(self, key)}")
        for key in ("iters", "workers", "print_freq", "generation", "margin", "weight_decay", "soft_weight"):
            if getattr(self, key) < 0:
                bad(key, f"must be at least 0, got {getattr(self, key)}")
        for key in ("lr", "tau"):
            if getattr(self, key) <= 0:
                bad(key, f"must be greater than 0, got {getattr(self, key)}")
        if not 0 <= self.momentum < 1:
            bad("momentum", f"must be in [0, 1), got {self.momentum}")
        if not 0 < self.gamma <= 1:
            bad("gamma", f"must be in (0, 1] (the learning-rate decay factor), got {self.gamma}")
        if not 0 <= self.rerank_lambda <= 1:
            bad("rerank_lambda", f"must be in [0, 1], got {self.rerank_lambda}")
        if not 0 <= self.seed <= SEED_MAX:
            bad("seed", f"must be in [0, {SEED_MAX}] (the range of NumPy's seeds), got {self.seed}")
        if any(t <= 0 for t in self.temperatures):
            bad("temperatures", f"every temperature must be greater than 0, got {self.temperatures}")
        if self.temperature is not None and self.temperature <= 0:
            bad("temperature", f"must be greater than 0, got {self.temperature}")
        if any(v < 1 for v in self.image_size):
            bad("image_size", f"height and width must be at least 1, got {self.image_size}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of everything that changes the trained weights: the options this run uses
        (:func:`weight_options`), so not an SFRS generation's unused temperatures."""
        used = json.dumps(weight_options(self.to_dict()), sort_keys=True)
        return hashlib.sha256(used.encode()).hexdigest()[:16]


def weight_options(options: dict) -> dict:
    """The options of a run (``TrainConfig.to_dict()``, also of a saved state) that change its weights: the
    ones it uses (vpr/train/generations.py), not workers or batch sizes for extraction."""
    return {k: v for k, v in used_options(options).items() if k not in RUNTIME_ONLY}


def _coerce(key: str, value, default):
    kind = type(default)
    if default is None:   # an optional number (temperature)
        kind = float
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise VprError(f"training config: {key}: expected true/false, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)):
            raise VprError(f"training config: {key}: expected a list, got {value!r}")
        elem = type(default[0]) if default else float
        try:
            return [elem(v) for v in value]
        except (TypeError, ValueError) as err:
            raise VprError(f"training config: {key}: {err}") from err
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise VprError(f"training config: {key}: expected {kind.__name__}, got {value!r}")
    return value


def _renamed(values: dict, where: str) -> dict:
    """``values`` with the old option names of RENAMED_OPTIONS given their new names (a warning
    says the new one); the old and the new name both given is an error."""
    values = dict(values)
    for old, new in RENAMED_OPTIONS.items():
        if old in values:
            if new in values:
                raise VprError(f"{where}: {old} is the old name of {new}; give only {new}")
            logging.getLogger(__name__).warning("%s: %s is the old name of %s", where, old, new)
            values[new] = values.pop(old)
    return values


def make_config(yaml_path: str | os.PathLike | None = None, overrides: dict | None = None) -> TrainConfig:
    """Defaults, then the YAML file, then the overrides (None values are ignored).

    The YAML file is read strictly (:func:`vpr.yamlfile.load_yaml`: a repeated key is an error) and checked
    on its own, before the overrides: a wrong value in the file is an error naming the file even when a
    flag replaces it.
    """
    defaults = TrainConfig()
    known = {f.name: getattr(defaults, f.name) for f in fields(TrainConfig)}
    values: dict = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        try:
            loaded = load_yaml(path)
        except YamlFileError as err:
            raise VprError(str(err)) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise VprError(f"{path}: expected a mapping of training options")
        loaded = _renamed(loaded, str(path))
        unknown = sorted(map(str, set(loaded) - set(known)))
        if unknown:
            raise VprError(f"{path}: unknown training option(s) {', '.join(unknown)}; "
                           f"valid options: {', '.join(known)}")
        try:
            values = {k: _coerce(k, v, known[k]) for k, v in loaded.items()}
            TrainConfig(**values).validate()
        except VprError as err:
            raise VprError(f"{path}: {err}") from None
    values.update({k: _coerce(k, v, known[k]) for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig(**values).validate()
