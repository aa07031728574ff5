"""Saving and loading models: vpr checkpoints, the reference's checkpoints, the NetVLAD authors' MatConvNet
struct models (vpr.models.matconvnet) and the MatConvNet VGG16 trunk.

vpr files are ``{"format": "vpr-model", "version": 1, "model_config": {...}, "state_dict": {...}, **extra}``
(training checkpoints add their own keys, e.g. epoch and optimiser state). Files without ``model_config``
are read as the reference's (OpenIBL) files: a ``{"state_dict": ...}`` checkpoint or a bare state dict (the
hub model), keys optionally prefixed ``module.`` (DistributedDataParallel); they are always VGG16 with K and
D taken from ``net_vlad.centroids`` and the PCA size from ``pca_layer.weight``. Every file is read with
``torch.load(weights_only=True)``; anything wrong with it is a VprError naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vpr.errors import VprError
from vpr.io import atomic_output, open_temporary
from vpr.models.embed import EmbedNet, ModelConfig, build_model
from vpr.models.matconvnet import is_matlab_file, load_matconvnet
from vpr.pca import check_pca_model, load_pca

FORMAT = "vpr-model"
VERSION = 1
_RESERVED = ("format", "version", "model_config", "state_dict")


def _numpy_safe_globals() -> list:
    # The reference stores metrics such as best_recall5 as numpy scalars; allow exactly the numpy
    # reconstructors needed for scalars and plain arrays under weights_only loading.
    core = getattr(np, "_core", None) or np.core
    dtypes = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_)
    return [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype,
            *(type(np.dtype(t)) for t in dtypes)]


def _torch_load(path: str | os.PathLike, map_location) -> object:
    path = Path(path)
    if not path.exists():
        raise VprError(f"{path}: model file does not exist")
    if not path.is_file():
        raise VprError(f"{path}: is not a file")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load raises many unrelated types on garbage input (KeyError, EOFError, …)
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        raise VprError(f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or not a torch file): "
                       f"{type(e).__name__}: {first_line}") from e


def _key_list(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:6])
    return shown + (f", … ({len(keys) - 6} more)" if len(keys) > 6 else "")


def _strip_module_prefix(state: dict) -> dict:
    return {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v
            for k, v in state.items()}


def _check_state(path: Path, state: dict, expected: dict[str, torch.Tensor], what: str) -> None:
    """Raise VprError naming the file for non-tensor values, unknown or missing keys, and shape mismatches."""
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise VprError(f"{path}: entries that are not tensors in the {what}: {_key_list(bad)}")
    unknown = set(state) - set(expected)
    if unknown:
        raise VprError(f"{path}: unexpected key(s) for the {what}: {_key_list(map(str, unknown))}")
    missing = set(expected) - set(state)
    if missing:
        raise VprError(f"{path}: missing key(s) for the {what}: {_key_list(missing)}")
    for k, ref in expected.items():
        if state[k].shape != ref.shape:
            raise VprError(f"{path}: shape mismatch for {k}: the file has {tuple(state[k].shape)}, "
                           f"the {what} expects {tuple(ref.shape)}")


def save_model(path: str | os.PathLike, model: EmbedNet, **extra) -> None:
    """Write a vpr checkpoint atomically; ``extra`` items (epoch, metrics, optimiser state …) are stored too.

    Extra values must be loadable with weights_only=True (tensors, numbers, strings, lists, dicts).
    """
    clash = [k for k in extra if k in _RESERVED]
    if clash:
        raise ValueError(f"save_model: extra key(s) {clash} are reserved")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"format": FORMAT, "version": VERSION, "model_config": model.config.to_dict(), "state_dict": state,
           **extra}
    with atomic_output(path) as tmp, open_temporary(tmp, "wb") as f:   # never through a link swapped in
        torch.save(obj, f)


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """Everything in a checkpoint file except its weights (epoch, recall, configs …)."""
    obj = _torch_load(path, "cpu")
    if not isinstance(obj, dict):
        raise VprError(f"{path}: expected a checkpoint dictionary, found {type(obj).__name__}")
    return {k: v for k, v in obj.items() if k != "state_dict"}


def load_model(path: str | os.PathLike, map_location="cpu") -> EmbedNet:
    """Build an EmbedNet from a vpr checkpoint, a reference checkpoint, the reference hub model or a
    MatConvNet struct model (a MATLAB file, recognised by its header; see vpr.models.matconvnet).

    The model is returned in eval mode, on ``map_location`` when that names a device, with backbone layers
    frozen per its config (reference and MatConvNet files: trainable_from="conv5", image_size=(480, 640)).
    """
    path = Path(path)
    if path.is_file() and (is_matlab_file(path) or path.suffix.lower() == ".mat"):
        if not is_matlab_file(path):
            raise VprError(f"{path}: not a MATLAB MAT-file (no MATLAB header); expected a MatConvNet struct "
                           "model such as Pitts30K_struct.mat")
        return load_matconvnet(path, map_location)
    obj = _torch_load(path, map_location)
    if not isinstance(obj, dict):
        raise VprError(f"{path}: expected a checkpoint dictionary, found {type(obj).__name__}")

    if "model_config" in obj:
        if obj.get("format", FORMAT) != FORMAT:
            raise VprError(f"{path}: unknown checkpoint format {obj.get('format')!r}")
        version = obj.get("version", VERSION)
        if not isinstance(version, int) or version > VERSION:
            raise VprError(f"{path}: checkpoint version {version!r} is newer than supported ({VERSION})")
        try:
            config = ModelConfig.from_dict(obj["model_config"])
        except (VprError, TypeError) as e:
            raise VprError(f"{path}: invalid model_config: {e}") from e
        state = obj.get("state_dict")
        if not isinstance(state, dict):
            raise VprError(f"{path}: has model_config but no state_dict")
        state = _strip_module_prefix(state)
    else:
        state = obj["state_dict"] if "state_dict" in obj else obj
        if not isinstance(state, dict):
            raise VprError(f"{path}: state_dict is a {type(state).__name__}, expected a dictionary")
        state = _strip_module_prefix(state)
        centroids = state.get("net_vlad.centroids")
        if not isinstance(centroids, torch.Tensor) or centroids.dim() != 2:
            raise VprError(f"{path}: not a NetVLAD model: no 'net_vlad.centroids' matrix "
                           "(and no 'model_config', so it is not a vpr checkpoint either)")
        pca_w = state.get("pca_layer.weight")
        if pca_w is not None and not (isinstance(pca_w, torch.Tensor) and pca_w.dim() == 4):
            raise VprError(f"{path}: pca_layer.weight must be a (P, K·D, 1, 1) tensor")
        config = ModelConfig(backbone="vgg16", num_clusters=int(centroids.shape[0]),
                             pca_dim=None if pca_w is None else int(pca_w.shape[0]))
        if centroids.shape[1] != 512:
            raise VprError(f"{path}: shape mismatch for net_vlad.centroids: the file has "
                           f"{tuple(centroids.shape)}, a vgg16 model expects ({config.num_clusters}, 512)")

    model = build_model(config)
    _check_state(path, state, model.state_dict(), "model")
    model.load_state_dict(state)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval()


def load_trunk(model: EmbedNet, path: str | os.PathLike) -> None:
    """Load backbone convolution weights from a file with keys ``<i>.weight``/``<i>.bias`` (the keys of
    ``model.base_model.base``; for efficientnet_lite0 they replace the packaged ImageNet weights; resnet18/50
    also take torchvision's ImageNet state dict, see vpr.models.resnet).

    This is the MatConvNet-converted VGG16 trunk (vd16_offtheshelf_conv5_3_max.pth): every convolution of
    the trunk (13 for vgg16, indices 0, 2, …, 28) must be present with torchvision shapes (out, in, 3, 3).
    """
    path = Path(path)
    obj = _torch_load(path, "cpu")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise VprError(f"{path}: expected a state dictionary of trunk weights, found {type(obj).__name__}")
    state = _strip_module_prefix(obj)
    rename = getattr(model.base_model, "trunk_state", None)   # e.g. torchvision's ResNet keys
    if rename is not None:
        state = rename(state)
    base: nn.Sequential = model.base_model.base
    expected = base.state_dict()
    missing = set(expected) - set(state)
    if missing:
        what = f"{len(expected)} weight tensors"
        conv_indices = getattr(model.base_model, "conv_indices", None)
        if conv_indices is not None:
            what = f"{len(conv_indices)} convolution layers"
            n_have = sum(f"{i}.weight" in state and f"{i}.bias" in state for i in conv_indices)
        else:
            n_have = len(set(expected) & set(state))
        raise VprError(f"{path}: the {model.config.backbone} trunk needs all {what}, "
                       f"the file has {n_have} complete; missing: {_key_list(missing)}")
    _check_state(path, state, expected, f"{model.config.backbone} trunk")
    base.load_state_dict(state)


def load_model_with_pca(checkpoint: str | os.PathLike, pca: str | os.PathLike | None,
                        whiten: bool | None = None,
                        checkpoint_sha256: str | None = None) -> tuple[EmbedNet, bool]:
    """Load a checkpoint and attach a PCA file if one is given; returns (model, whiten actually used).

    ``whiten=None`` follows the PCA file's ``whiten`` attribute. A PCA fitted on another model's
    descriptors is refused (``checkpoint_sha256``: the checkpoint's, hashed when needed and not given).
    """
    model = load_model(checkpoint)
    if not pca:
        return model, False
    if model.pca_layer is not None:
        raise VprError(f"{checkpoint}: the model already has a PCA layer; do not pass --pca {pca}")
    params = load_pca(pca)
    check_pca_model(params, pca, checkpoint, checkpoint_sha256)
    whiten = params.whiten if whiten is None else whiten
    try:
        model.attach_pca(params, whiten=whiten)
    except VprError as err:
        raise VprError(f"{pca} does not fit {checkpoint}: {err}") from err
    return model, whiten
