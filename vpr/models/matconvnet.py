"""The NetVLAD authors' MatConvNet models saved as a plain MATLAB struct (e.g. ``Pitts30K_struct.mat``).

The file holds a struct ``net``: ``net.layers`` is a cell (or struct array) of layer structs with fields
``type``, ``name`` and ``weights`` (a cell of arrays), and ``net.meta.normalization.averageImage`` is the
RGB mean subtracted from 0..255 pixels. The layers of the VGG16 Pitts30k model are:

* the VGG16 trunk cut at conv5_3 without its ReLU: 13 ``conv`` layers (weights h×w×in×out and out),
  ``relu`` and ``pool`` (2×2 max, stride 2) layers in the VGG16 order;
* normalisation layers without weights (per-location L2, intra-normalisation, L2), which vpr always applies;
* the NetVLAD layer (name ``vlad:core``): weights {assignment W (D×K), C (D×K)} where C holds the
  *negated* centers, V(d, k) = Σ_i a_k(x_i)(x_i(d) + C(d, k)), a = softmax_k(Wᵀx_i), no assignment bias;
* optionally a whitening ``conv`` layer on the VLAD (weights 1×1×(D·K)×P and P), then L2.

MatConvNet flattens the intra-normalised VLAD dimension-major (index d·K + k) while vpr flattens
cluster-major (k·D + d), so the whitening matrix's input columns are permuted to vpr's order. The model is
built as a vpr EmbedNet (vgg16, K from the file, the whitening as its PCA layer) whose ``input_shift``
turns vpr's input (0..255 minus the VGG mean) into 0..255 minus the file's mean.

Layers are found by their type and name, not by position. MATLAB v5/v7 files are read with scipy, v7.3
(HDF5) files with h5py. Anything unexpected is a VprError naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vpr.data.images import VGG_MEAN_RGB
from vpr.data.matfile import h5_cell_refs, h5_enter
from vpr.errors import VprError

#: the VGG16 trunk cut at conv5_3 before its ReLU, as MatConvNet layer types (torchvision features[:29])
VGG16_TYPES = ("conv", "relu", "conv", "relu", "pool",
               "conv", "relu", "conv", "relu", "pool",
               "conv", "relu", "conv", "relu", "conv", "relu", "pool",
               "conv", "relu", "conv", "relu", "conv", "relu", "pool",
               "conv", "relu", "conv", "relu", "conv")
VGG16_CHANNELS = ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
                  (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512))
_TRUNK_TYPES = {"conv", "relu", "pool"}


def is_matlab_file(path: str | os.PathLike) -> bool:
    """True when the file starts with a MATLAB MAT-file header (v5, v7 and v7.3 all do)."""
    try:
        with open(path, "rb") as f:
            return f.read(6) == b"MATLAB"
    except OSError:
        return False


@dataclass
class _Layer:
    type: str
    name: str
    weights: list[np.ndarray]
    fields: dict


# --- reading the struct, MATLAB v5/v7 (scipy) ---------------------------------------------------------

def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value.ravel())
    return [value]


def _text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "US":
        return "".join(str(v) for v in value.ravel())
    return ""


def _v5_layers(path: Path) -> tuple[list[_Layer], object]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except Exception as e:
        raise VprError(f"{path}: not a readable MATLAB file: {type(e).__name__}: {e}") from e
    net = mat.get("net")
    if net is None or not hasattr(net, "_fieldnames"):
        found = ", ".join(k for k in mat if not k.startswith("__")) or "nothing"
        raise VprError(f"{path}: no struct 'net' in this MATLAB file (found: {found})")
    if "layers" not in net._fieldnames:
        raise VprError(f"{path}: the struct 'net' has no field 'layers'")
    layers = []
    for i, item in enumerate(_as_list(net.layers)):
        if not hasattr(item, "_fieldnames"):
            raise VprError(f"{path}: net.layers{{{i + 1}}} is not a struct")
        fields = {f: getattr(item, f) for f in item._fieldnames}
        weights = [np.asarray(w) for w in _as_list(fields.get("weights")) if np.asarray(w).size > 0]
        layers.append(_Layer(_text(fields.get("type")), _text(fields.get("name")), weights, fields))
    average = None
    meta = getattr(net, "meta", None)
    normalization = getattr(meta, "normalization", None)
    if normalization is not None:
        average = getattr(normalization, "averageImage", None)
    return layers, average


# --- reading the struct, MATLAB v7.3 (HDF5) ----------------------------------------------------------

def _h5_value(f, obj, trail: tuple = ()):
    """A v7.3 object as numpy: arrays transposed back to MATLAB order, chars as str, cells as lists."""
    import h5py

    trail = h5_enter(f, obj, trail)
    if isinstance(obj, h5py.Group):
        return {k: _h5_value(f, obj[k], trail) for k in obj}
    cls = obj.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    if obj.attrs.get("MATLAB_empty", 0):
        return np.zeros((0,))
    data = obj[()]
    if cls == "cell":
        return [_h5_value(f, f[ref], trail) for ref in h5_cell_refs(f, obj, np.asarray(data)).T.ravel()]
    if cls == "char":
        return "".join(chr(c) for c in np.asarray(data).T.ravel())
    return np.asarray(data).T  # MATLAB is column-major: h5py sees the axes reversed


def _v73_layers(path: Path) -> tuple[list[_Layer], object]:
    import h5py

    try:
        f = h5py.File(path, "r")
    except Exception as e:
        raise VprError(f"{path}: not a readable MATLAB v7.3 file: {type(e).__name__}: {e}") from e
    with f:
        if not isinstance(f.get("net"), h5py.Group) or "layers" not in f["net"]:
            raise VprError(f"{path}: no struct 'net' with a field 'layers'")
        try:
            entries, average = _v73_entries(f, f["net"]["layers"])
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as e:  # damaged HDF5 objects
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise VprError(f"{path}: malformed MATLAB v7.3 model file ({type(e).__name__}: {first})") \
                from None
    layers = []
    for fields in entries:
        weights = fields.get("weights", [])
        weights = [np.asarray(w) for w in (weights if isinstance(weights, list) else [weights])
                   if np.asarray(w).size > 0]
        weights = [np.squeeze(w) if w.ndim > 1 else w for w in weights]  # as scipy's squeeze_me gives
        layers.append(_Layer(_text(fields.get("type")), _text(fields.get("name")), weights, fields))
    return layers, average


def _v73_entries(f, raw) -> tuple[list[dict], object]:
    """The fields of every layer of ``net.layers`` (``raw``), and ``net.meta.normalization.averageImage``."""
    import h5py

    net = h5_enter(f, f["net"], ())
    trail = h5_enter(f, raw, net)
    entries: list[dict] = []
    if isinstance(raw, h5py.Group):  # a struct array: each field holds one reference per layer
        columns = {k: [f[r] for r in h5_cell_refs(f, raw[k], np.asarray(raw[k][()])).T.ravel()] for k in raw}
        n = len(next(iter(columns.values()), []))
        entries = [{k: _h5_value(f, v[i], trail) for k, v in columns.items()} for i in range(n)]
    else:  # a cell of structs
        for ref in h5_cell_refs(f, raw, np.asarray(raw[()])).T.ravel():
            item = _h5_value(f, f[ref], trail)
            entries.append(item if isinstance(item, dict) else {})
    average = None
    try:
        average = _h5_value(f, f["net"]["meta"]["normalization"]["averageImage"], net)
    except KeyError:
        pass
    return entries, average


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(512)
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


# --- mapping onto a vpr EmbedNet ----------------------------------------------------------------------

def _find_vlad(path: Path, layers: list[_Layer]) -> int:
    named = [i for i, la in enumerate(layers) if "vlad:core" in la.name.lower()]
    if not named:  # any layer other than conv with two same-shaped D×K matrices
        named = [i for i, la in enumerate(layers)
                 if la.type != "conv" and len(la.weights) == 2
                 and all(np.squeeze(w).ndim == 2 for w in la.weights)
                 and np.squeeze(la.weights[0]).shape == np.squeeze(la.weights[1]).shape]
    if not named:
        raise VprError(f"{path}: no NetVLAD layer (a layer named 'vlad:core' with assignment weights and "
                       f"centers) among the {len(layers)} layers of net.layers")
    return named[0]


def _trunk_state(path: Path, layers: list[_Layer]) -> dict[str, torch.Tensor]:
    trunk = [(i, la) for i, la in enumerate(layers) if la.type in _TRUNK_TYPES]
    types = tuple(la.type for _, la in trunk)
    if types != VGG16_TYPES:
        raise VprError(f"{path}: the layers before the NetVLAD layer are not the VGG16 trunk cut at conv5_3 "
                       f"(conv/relu/pool sequence {' '.join(types) or 'empty'}; expected "
                       f"{len(VGG16_TYPES)} layers ending with conv5_3 without its ReLU)")
    state: dict[str, torch.Tensor] = {}
    convs = [(pos, la) for pos, (_, la) in enumerate(trunk) if la.type == "conv"]
    for (pos, la), (c_in, c_out) in zip(convs, VGG16_CHANNELS, strict=True):
        if len(la.weights) != 2:
            raise VprError(f"{path}: conv layer {la.name!r} has {len(la.weights)} weight arrays, expected 2")
        w, b = (np.asarray(x, dtype=np.float32) for x in la.weights)
        if w.shape != (3, 3, c_in, c_out) or b.reshape(-1).shape != (c_out,):
            raise VprError(f"{path}: conv layer {la.name!r} has weights {w.shape} and bias {b.shape}, "
                           f"VGG16 expects (3, 3, {c_in}, {c_out}) and ({c_out},)")
        for key, expected in (("stride", 1), ("pad", 1)):
            if key in la.fields and not np.all(np.asarray(la.fields[key]) == expected):
                raise VprError(f"{path}: conv layer {la.name!r} has {key} {la.fields[key]}, "
                               f"VGG16 uses {expected}")
        # MatConvNet h×w×in×out → torch out×in×h×w
        w = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
        state[f"base_model.base.{pos}.weight"] = torch.from_numpy(w)
        state[f"base_model.base.{pos}.bias"] = torch.from_numpy(b.reshape(-1).copy())
    for _, la in trunk:
        if la.type == "pool":
            method = _text(la.fields.get("method")) or "max"
            size = np.asarray(la.fields.get("pool", 2)).reshape(-1)
            stride = np.asarray(la.fields.get("stride", 2)).reshape(-1)
            pad = np.asarray(la.fields.get("pad", 0)).reshape(-1)
            if method != "max" or not (np.all(size == 2) and np.all(stride == 2) and np.all(pad == 0)):
                raise VprError(f"{path}: pool layer {la.name!r} is not a 2×2 max pool with stride 2")
    return state


def _average_rgb(path: Path, average) -> np.ndarray:
    if average is None:
        raise VprError(f"{path}: net.meta.normalization.averageImage is missing")
    a = np.asarray(average, dtype=np.float64)
    if a.size < 3 or a.shape[-1] != 3:
        raise VprError(f"{path}: net.meta.normalization.averageImage has shape {a.shape}, expected RGB "
                       "values (…×3)")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise VprError(f"{path}: net.meta.normalization.averageImage holds {bad.size} NaN or infinite "
                       f"value(s) (first: {a.flat[bad[0]]} at flat position {bad[0]} of {a.size}); the mean "
                       "must be finite")
    # a 1×1×3 mean, or a whole mean image: its value when constant, else its per-channel mean
    rows = a.reshape(-1, 3)
    return rows[0] if np.all(rows == rows[0]) else rows.mean(axis=0)


def load_matconvnet(path: str | os.PathLike, map_location="cpu"):
    """Build an eval-mode EmbedNet (vgg16, NetVLAD, whitening as PCA layer) from a MatConvNet struct file."""
    from vpr.models.embed import ModelConfig, build_model

    path = Path(path)
    if not path.is_file():
        raise VprError(f"{path}: is not a file" if path.exists() else f"{path}: model file does not exist")
    layers, average = _v73_layers(path) if _is_hdf5(path) else _v5_layers(path)
    v = _find_vlad(path, layers)
    vlad = layers[v]
    if len(vlad.weights) != 2:
        raise VprError(f"{path}: NetVLAD layer {vlad.name!r} has {len(vlad.weights)} weight arrays; only the "
                       "bias-free layer {assignment weights, centers} is supported")
    assign = np.asarray(np.squeeze(vlad.weights[0]), dtype=np.float32)
    neg_centers = np.asarray(np.squeeze(vlad.weights[1]), dtype=np.float32)
    if assign.ndim != 2 or assign.shape != neg_centers.shape or assign.shape[0] != 512:
        raise VprError(f"{path}: NetVLAD layer {vlad.name!r} has weights {assign.shape} and "
                       f"{neg_centers.shape}, expected two 512×K matrices")
    d, k = assign.shape
    state = _trunk_state(path, layers[:v])
    state["net_vlad.conv.weight"] = torch.from_numpy(np.ascontiguousarray(assign.T)).reshape(k, d, 1, 1)
    state["net_vlad.centroids"] = torch.from_numpy(np.ascontiguousarray(-neg_centers.T))

    pca_dim = None
    after = [la for la in layers[v + 1:] if la.type == "conv"]
    if after:
        white = after[0]
        if len(white.weights) != 2:
            raise VprError(f"{path}: whitening layer {white.name!r} has {len(white.weights)} weight arrays, "
                           "expected 2")
        w = np.asarray(white.weights[0], dtype=np.float32)
        b = np.asarray(white.weights[1], dtype=np.float32).reshape(-1)
        w = w.reshape(w.shape[-2], w.shape[-1]) if w.ndim >= 2 and w.size == w.shape[-2] * w.shape[-1] else w
        if w.ndim != 2 or w.shape[0] != d * k or b.shape != (w.shape[1],):
            raise VprError(f"{path}: whitening layer {white.name!r} has weights {np.shape(white.weights[0])} "
                           f"and bias {b.shape}, expected 1×1×{d * k}×P and P")
        pca_dim = w.shape[1]
        # rows of w.T are output dims; its columns are in MatConvNet order d·K + k → vpr's k·D + d
        w_vpr = w.T.reshape(pca_dim, d, k).transpose(0, 2, 1).reshape(pca_dim, k * d, 1, 1)
        state["pca_layer.weight"] = torch.from_numpy(np.ascontiguousarray(w_vpr))
        state["pca_layer.bias"] = torch.from_numpy(b.copy())

    shift = np.asarray(VGG_MEAN_RGB, dtype=np.float64) - _average_rgb(path, average)
    # below 1e-5 the difference is the VGG mean rounded to single precision (its spacing near 100: 7.6e-6)
    config = ModelConfig(backbone="vgg16", num_clusters=k, pca_dim=pca_dim,
                         input_shift=None if np.all(np.abs(shift) < 1e-5) else tuple(float(s) for s in shift))
    model = build_model(config)
    missing = set(model.state_dict()) - set(state)
    if missing:  # cannot happen for a well-formed file; a guard for the mapping above
        raise VprError(f"{path}: could not fill {', '.join(sorted(missing))}")
    model.load_state_dict(state)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval()
