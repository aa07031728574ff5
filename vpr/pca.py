"""PCA-whitening of global descriptors: fitting, the HDF5 file, and applying it to descriptors.

Maths (docs/method.md §5.3, descriptors as rows): X (N×D) sampled training descriptors, μ their mean,
X̃ = X − μ. The k leading eigenpairs (λ, U) of the covariance C = X̃ᵀX̃/(N−1) are found

* directly (primal) when D ≤ N, from the D×D matrix C;
* through the N×N Gram matrix G = X̃X̃ᵀ/(N−1) (dual) when D > N, the usual case (32768-d descriptors,
  10,000 samples): G v = λ v gives the unit principal direction u = X̃ᵀ v / √((N−1) λ).

Unlike the reference, eigenpairs are always sorted by descending eigenvalue, eigenvalues are clamped to
≥ 1e-9 and k is capped at min(D, N−1), the rank of the centered data. Decomposition is in float64; the stored
parameters are float32. Each direction's sign is fixed (largest-magnitude entry positive) so a refit of the
same data gives the same file.

Applying: y = normalise(U_wᵀ (x − μ)) with U_w = U·diag(λ^{−1/2}) when whitening (the default), U otherwise.
``pca_projection`` gives this map as a weight and bias, the form the model's 1×1 convolution head stores
(``EmbedNet.attach_pca``, applied by ``EmbedNet.project``).

File (HDF5): ``U`` (D×k), ``lams`` (k), ``mu`` (D), ``Utmu`` (k) = Uᵀμ, all float32; attributes ``kind``
("vpr-pca"), ``whiten`` (the default for applying), ``n_samples``, ``source`` and ``checkpoint_sha256``: the
SHA-256 of the checkpoint whose descriptors it was fitted on ("" when unknown), which
:func:`check_pca_model` compares with the model it is attached to: a PCA of another model's descriptors
is meaningless even when the dimensions agree.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import torch

from vpr import artifacts
from vpr.errors import VprError
from vpr.io import atomic_h5, sha256sum

log = logging.getLogger(__name__)

EIGENVALUE_FLOOR = 1e-9
_CHUNK = 4096  # columns (primal: rows) processed at a time, to bound float64 memory


@dataclass
class PCAParams:
    """A fitted PCA: ``U`` (D×k) unit principal directions, ``lams`` (k) descending eigenvalues, ``mu`` (D)
    the mean, ``Utmu`` (k) = Uᵀμ; float32 CPU tensors. The metadata are stored as file attributes."""

    U: torch.Tensor
    lams: torch.Tensor
    mu: torch.Tensor
    Utmu: torch.Tensor
    whiten: bool = True
    n_samples: int = 0
    source: str = ""
    checkpoint_sha256: str = ""

    @property
    def dim(self) -> int:
        """Number of components k."""
        return self.U.shape[1]

    @property
    def input_dim(self) -> int:
        """Descriptor dimension D."""
        return self.U.shape[0]

    def truncated(self, k: int) -> PCAParams:
        """The first ``k`` components (the leading ones: components are sorted descending)."""
        if not 1 <= k <= self.dim:
            raise ValueError(f"cannot keep {k} PCA components out of {self.dim}")
        return replace(self, U=self.U[:, :k].contiguous(), lams=self.lams[:k].clone(),
                       Utmu=self.Utmu[:k].clone())


def sample_rows(n_total: int, n_sample: int = 10000, seed: int = 43) -> np.ndarray:
    """Sorted indices of ``min(n_total, n_sample)`` distinct rows out of ``n_total``, drawn with a numpy
    Generator seeded by ``seed`` (deterministic); all rows when there are no more than ``n_sample``."""
    if n_total < 0 or n_sample < 1:
        raise ValueError(f"need n_total >= 0 and n_sample >= 1, got {n_total} and {n_sample}")
    if n_total <= n_sample:
        return np.arange(n_total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n_sample, replace=False)).astype(np.int64)


def _fix_signs(U: torch.Tensor) -> torch.Tensor:
    rows = U.abs().argmax(dim=0)
    signs = torch.sign(U[rows, torch.arange(U.shape[1], device=U.device)])
    signs[signs == 0] = 1
    return U * signs


def fit_pca(X: torch.Tensor | np.ndarray, k: int, *, device: str | torch.device | None = None,
            source: str = "", whiten: bool = True, checkpoint_sha256: str = "") -> PCAParams:
    """Fit PCA with ``k`` components to the rows of ``X`` (N×D).

    ``k`` is capped at min(D, N−1) with a logged warning. ``device`` selects where the float64 products
    and the eigendecomposition run (default: X's device); ``source``, ``whiten`` and
    ``checkpoint_sha256`` (the model the descriptors came from) are only recorded.
    """
    X = torch.as_tensor(X)
    if X.dim() != 2:
        raise ValueError(f"PCA needs a 2-D (N, D) matrix of descriptors, got shape {tuple(X.shape)}")
    n, d = X.shape
    if n < 2:
        raise ValueError(f"PCA needs at least 2 descriptors, got {n}")
    if k < 1:
        raise ValueError(f"PCA needs k >= 1 components, got {k}")
    k_max = min(d, n - 1)
    if k > k_max:
        log.warning("PCA: requested %d components, but %d descriptors of dimension %d support at most "
                    "min(D, N-1) = %d; using k = %d", k, n, d, k_max, k_max)
        k = k_max
    device = torch.device(device) if device is not None else X.device
    if not bool(torch.isfinite(X).all()):
        raise ValueError("PCA input contains NaN or infinite values")

    mu = torch.zeros(d, dtype=torch.float64, device=device)
    for start in range(0, n, _CHUNK):
        mu += X[start:start + _CHUNK].to(device, torch.float64).sum(dim=0)
    mu /= n

    def centered(cols: slice | None = None, rows: slice | None = None) -> torch.Tensor:
        block = X[rows if rows is not None else slice(None), cols if cols is not None else slice(None)]
        return block.to(device, torch.float64) - mu[cols if cols is not None else slice(None)]

    if d <= n:  # primal: C = X̃ᵀX̃/(N−1), D×D
        C = torch.zeros(d, d, dtype=torch.float64, device=device)
        for start in range(0, n, _CHUNK):
            Xc = centered(rows=slice(start, start + _CHUNK))
            C += Xc.T @ Xc
        lams, U = torch.linalg.eigh(C / (n - 1))
        lams, U = lams.flip(0)[:k], U.flip(1)[:, :k]
        lams = lams.clamp_min(EIGENVALUE_FLOOR)
    else:  # dual: G = X̃X̃ᵀ/(N−1), N×N; u = X̃ᵀ v / √((N−1) λ)
        G = torch.zeros(n, n, dtype=torch.float64, device=device)
        for start in range(0, d, _CHUNK):
            Xc = centered(cols=slice(start, start + _CHUNK))
            G += Xc @ Xc.T
        lams, V = torch.linalg.eigh(G / (n - 1))
        lams, V = lams.flip(0)[:k], V.flip(1)[:, :k]
        lams = lams.clamp_min(EIGENVALUE_FLOOR)
        V = V / torch.sqrt(lams * (n - 1))
        U = torch.empty(d, k, dtype=torch.float64, device=device)
        for start in range(0, d, _CHUNK):
            U[start:start + _CHUNK] = centered(cols=slice(start, start + _CHUNK)).T @ V
    U = _fix_signs(U)
    Utmu = U.T @ mu
    as32 = lambda t: t.to("cpu", torch.float32).contiguous()  # noqa: E731
    return PCAParams(U=as32(U), lams=as32(lams), mu=as32(mu), Utmu=as32(Utmu), whiten=whiten,
                     n_samples=n, source=source, checkpoint_sha256=checkpoint_sha256)


def pca_projection(params: PCAParams, whiten: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The PCA map before normalisation: weight W = U_wᵀ (k×D) and bias b = −U_wᵀμ
    (k), so y = W x + b. U_w = U·diag(λ^{−1/2}) when whitening, U otherwise. (A 1×1 Conv2d head stores W
    as its weight and b as its bias.)"""
    U, lams = params.U.double(), params.lams.double()
    Uw = U / torch.sqrt(lams) if whiten else U
    W = Uw.T
    b = -(W @ params.mu.double().reshape(-1))
    return W.float().contiguous(), b.float()


def save_pca(path: str | os.PathLike, params: PCAParams) -> None:
    """Write ``params`` to the HDF5 file ``path`` atomically (complete file or none)."""
    with atomic_h5(path) as f:
        for name in ("U", "lams", "mu", "Utmu"):
            f.create_dataset(name, data=getattr(params, name).to(torch.float32).numpy())
        f.attrs["kind"] = artifacts.PCA
        f.attrs["whiten"] = bool(params.whiten)
        f.attrs["n_samples"] = int(params.n_samples)
        f.attrs["source"] = str(params.source)
        f.attrs["checkpoint_sha256"] = str(params.checkpoint_sha256)


def load_pca(path: str | os.PathLike) -> PCAParams:
    """Read a PCA file written by :func:`save_pca`; ``VprError`` naming the file for a missing, unreadable
    or inconsistent one. ``mu`` and ``Utmu`` may also be stored as column vectors (D×1, k×1)."""
    path = Path(path)
    with artifacts.open_artifact(path, artifacts.PCA) as f:
        arrays = {}
        for name in ("U", "lams", "mu", "Utmu"):
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise VprError(f"PCA file {path} has no dataset '{name}' (expected U, lams, mu, Utmu)")
            try:
                arrays[name] = np.asarray(f[name][()], dtype=np.float32)
            except (OSError, TypeError, ValueError) as err:
                raise VprError(f"PCA file {path}: cannot read dataset '{name}' ({err})") from None
        attrs = dict(f.attrs)
    U, lams = arrays["U"], arrays["lams"].reshape(-1)
    mu, Utmu = arrays["mu"], arrays["Utmu"]
    if U.ndim != 2:
        raise VprError(f"PCA file {path}: 'U' has shape {U.shape}, expected (D, k)")
    d, k = U.shape
    if mu.size != d or mu.squeeze().ndim > 1:
        raise VprError(f"PCA file {path}: 'mu' has shape {mu.shape}, expected ({d},) to match 'U' {U.shape}")
    if lams.size != k or Utmu.size != k or Utmu.squeeze().ndim > 1:
        raise VprError(f"PCA file {path}: 'lams' {arrays['lams'].shape} and 'Utmu' {Utmu.shape} must both "
                       f"have {k} entries to match 'U' {U.shape}")
    for name, arr in arrays.items():
        if not np.isfinite(arr).all():
            raise VprError(f"PCA file {path}: dataset '{name}' contains NaN or infinite values")
    if (lams <= 0).any():
        raise VprError(f"PCA file {path}: 'lams' has non-positive eigenvalues")
    def text(name: str) -> str:
        value = attrs.get(name, "")
        return value.decode() if isinstance(value, bytes) else str(value)

    return PCAParams(U=torch.from_numpy(U), lams=torch.from_numpy(lams),
                     mu=torch.from_numpy(mu.reshape(d)), Utmu=torch.from_numpy(Utmu.reshape(k)),
                     whiten=bool(attrs.get("whiten", True)), n_samples=int(attrs.get("n_samples", 0)),
                     source=text("source"), checkpoint_sha256=text("checkpoint_sha256"))


def check_pca_model(params: PCAParams, pca: str | os.PathLike, checkpoint: str | os.PathLike,
                    checkpoint_sha256: str | None = None) -> None:
    """VprError when the PCA ``params`` (read from ``pca``) were fitted on descriptors of another model
    than ``checkpoint`` (SHA-256 ``checkpoint_sha256``, hashed here when not given).

    A PCA file that records no checkpoint (the reference's) cannot be checked
    and is accepted; the dimensions are still checked when it is attached.
    """
    if not params.checkpoint_sha256:
        log.warning("%s records no checkpoint: cannot check that it was fitted on descriptors of %s",
                    pca, checkpoint)
        return
    actual = checkpoint_sha256 or sha256sum(checkpoint)
    if actual != params.checkpoint_sha256:
        raise VprError(f"{pca} was fitted on descriptors of another model (checkpoint sha256 "
                       f"{params.checkpoint_sha256[:16]}, {checkpoint} is {actual[:16]}); fit a PCA on this "
                       "model's features with 'vpr fit-pca'")
