"""vpr.pca and `vpr fit-pca` against numpy's eigendecomposition of the covariance and whitening's identity."""

import logging

import h5py
import numpy as np
import pytest
import torch

from vpr import cli
from vpr.errors import VprError
from vpr.models import ModelConfig, build_model
from vpr.pca import PCAParams, fit_pca, load_pca, pca_projection, sample_rows, save_pca


def data(n, d, seed=0):
    # Anisotropic data with distinct variances, so the principal directions are well defined.
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.2, d)
    rotation = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return (rng.normal(size=(n, d)) * scales @ rotation + 1.5).astype(np.float32)


def numpy_pca(X, k):
    """Eigenpairs of the sample covariance, descending, by numpy in float64."""
    X = X.astype(np.float64)
    C = np.cov(X, rowvar=False)  # (D, D), divides by N-1
    lams, U = np.linalg.eigh(C)
    order = np.argsort(lams)[::-1][:k]
    return lams[order], U[:, order]


@pytest.mark.parametrize("n,d,k", [(60, 8, 5), (12, 30, 6)])  # primal (D <= N) and dual (D > N)
def test_matches_numpy_eigendecomposition(n, d, k):
    X = data(n, d)
    params = fit_pca(X, k)
    lams, U = numpy_pca(X, k)
    assert params.U.shape == (d, k) and params.lams.shape == (k,) and params.U.dtype == torch.float32
    np.testing.assert_allclose(params.lams.numpy(), lams, rtol=1e-5)
    assert np.all(np.diff(params.lams.numpy()) < 0), "eigenvalues must be in descending order"
    # Directions equal up to sign.
    got = params.U.numpy().astype(np.float64)
    cos = np.abs((got * U).sum(axis=0))
    np.testing.assert_allclose(cos, 1.0, atol=1e-5)
    np.testing.assert_allclose(params.mu.numpy(), X.astype(np.float64).mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(params.Utmu.numpy(), got.T @ X.astype(np.float64).mean(axis=0), atol=1e-5)
    assert params.n_samples == n


def test_whitened_fit_data_has_identity_covariance():
    X = data(80, 10, seed=1)
    params = fit_pca(X, 6)
    W, b = pca_projection(params, whiten=True)
    Y = X.astype(np.float64) @ W.numpy().T.astype(np.float64) + b.numpy()  # before the L2 normalisation
    np.testing.assert_allclose(Y.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(Y, rowvar=False), np.eye(6), atol=1e-4)
    # Without whitening the covariance is diag(λ).
    W, b = pca_projection(params, whiten=False)
    Y = X.astype(np.float64) @ W.numpy().T.astype(np.float64) + b.numpy()
    np.testing.assert_allclose(np.cov(Y, rowvar=False), np.diag(params.lams.numpy()), atol=1e-3)


def test_the_model_head_is_the_normalised_projection():
    # attach_pca + EmbedNet.project (the head every PCA descriptor goes through) on 128-d descriptors
    X = data(40, 128, seed=2)
    params = fit_pca(X, 4)
    U, lams, mu = (t.numpy().astype(np.float64) for t in (params.U, params.lams, params.mu))
    expected = (X - mu) @ (U / np.sqrt(lams))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    model = build_model(ModelConfig(backbone="small", num_clusters=1, trainable_from="full"))
    assert model.vlad_dim == 128
    model.attach_pca(params)
    with torch.no_grad():
        got = model.project(torch.from_numpy(X))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    unwhitened = (X - mu) @ U
    unwhitened /= np.linalg.norm(unwhitened, axis=1, keepdims=True)
    model.attach_pca(params, whiten=False)
    with torch.no_grad():
        np.testing.assert_allclose(model.project(torch.from_numpy(X)).numpy(), unwhitened, atol=1e-5)
    model.attach_pca(params, dim=2)
    with torch.no_grad():
        first_two = model.project(torch.from_numpy(X)).numpy()
    model.attach_pca(fit_pca(X, 2))
    with torch.no_grad():
        np.testing.assert_allclose(first_two, model.project(torch.from_numpy(X)).numpy(), atol=1e-5)


def test_k_is_capped_with_a_warning(caplog):
    X = data(7, 20)  # centered rank N-1 = 6
    with caplog.at_level(logging.WARNING):
        params = fit_pca(X, 4096)
    assert params.dim == 6
    assert "requested 4096 components" in caplog.text and "using k = 6" in caplog.text
    # Every component kept: still in descending order (the reference left them ascending here).
    np.testing.assert_allclose(params.lams.numpy(), numpy_pca(X, 6)[0], rtol=1e-4)
    caplog.clear()
    X = data(50, 5)
    with caplog.at_level(logging.WARNING):
        assert fit_pca(X, 9).dim == 5
    assert "requested 9 components" in caplog.text and "using k = 5" in caplog.text
    with pytest.raises(ValueError, match="at least 2 descriptors"):
        fit_pca(X[:1], 2)


def test_sample_rows_is_seeded_and_distinct():
    a = sample_rows(1000, 100, seed=43)
    assert a.shape == (100,) and len(set(a.tolist())) == 100 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, sample_rows(1000, 100, seed=43))
    assert not np.array_equal(a, sample_rows(1000, 100, seed=44))
    assert np.array_equal(sample_rows(50, 100), np.arange(50))


def test_save_load_round_trip(tmp_path):
    params = fit_pca(data(30, 12), 5, source="feats.h5:all")
    params.whiten = False
    path = tmp_path / "pca.h5"
    save_pca(path, params)
    with h5py.File(path) as f:
        assert {k: f[k].shape for k in f} == {"U": (12, 5), "lams": (5,), "mu": (12,), "Utmu": (5,)}
        assert f.attrs["whiten"] == False and f.attrs["n_samples"] == 30  # noqa: E712
    loaded = load_pca(path)
    for name in ("U", "lams", "mu", "Utmu"):
        assert torch.equal(getattr(loaded, name), getattr(params, name))
    assert (loaded.whiten, loaded.n_samples, loaded.source) == (False, 30, "feats.h5:all")
    assert [p.name for p in tmp_path.iterdir()] == ["pca.h5"]


def write_pca_file(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f.create_dataset(name, data=value)


def test_load_errors(tmp_path):
    with pytest.raises(VprError, match=r"missing\.h5: PCA file not found"):
        load_pca(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(VprError, match=r"junk\.h5: not a readable HDF5 PCA file"):
        load_pca(tmp_path / "junk.h5")
    ok = dict(U=np.eye(4, 2), lams=np.ones(2), mu=np.zeros(4), Utmu=np.zeros(2))
    write_pca_file(tmp_path / "nolams.h5", **{k: v for k, v in ok.items() if k != "lams"})
    with pytest.raises(VprError, match=r"nolams\.h5 has no dataset 'lams'"):
        load_pca(tmp_path / "nolams.h5")
    write_pca_file(tmp_path / "mu.h5", **{**ok, "mu": np.zeros(3)})
    with pytest.raises(VprError, match=r"'mu' has shape \(3,\), expected \(4,\)"):
        load_pca(tmp_path / "mu.h5")
    write_pca_file(tmp_path / "lams.h5", **{**ok, "lams": np.ones(3)})
    with pytest.raises(VprError, match=r"must both have 2 entries"):
        load_pca(tmp_path / "lams.h5")
    # Column-vector mu/Utmu (as the reference writes them) are accepted.
    write_pca_file(tmp_path / "col.h5", **{**ok, "mu": np.zeros((4, 1)), "Utmu": np.zeros((2, 1))})
    assert load_pca(tmp_path / "col.h5").mu.shape == (4,)


def test_save_failure_leaves_no_file(tmp_path):
    bad = PCAParams(U=torch.zeros(3, 2), lams=torch.ones(2), mu=torch.zeros(3), Utmu=torch.zeros(2))
    bad.U = None  # not a tensor: writing fails half-way
    with pytest.raises(AttributeError):
        save_pca(tmp_path / "pca.h5", bad)
    assert list(tmp_path.iterdir()) == []


# ---- the command ------------------------------------------------------------------------------------

def write_features(path, db, query):
    with h5py.File(path, "w") as f:
        f.create_dataset("db", data=db)
        f.create_dataset("query", data=query)
        f.attrs["kind"] = "vpr-features"


def test_fit_pca_command(tmp_path):
    X = data(70, 16, seed=4)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    feats, out = tmp_path / "feats.h5", tmp_path / "pca.h5"
    write_features(feats, X[:50], X[50:])
    assert cli.main(["fit-pca", "--features", str(feats), "--out", str(out), "--dim", "8",
                     "--samples", "40", "--seed", "3"]) == 0
    params = load_pca(out)
    rows = sample_rows(70, 40, seed=3)  # db rows first, then query rows
    lams, U = numpy_pca(X[rows], 8)
    np.testing.assert_allclose(params.lams.numpy(), lams, rtol=1e-4)
    np.testing.assert_allclose(np.abs((params.U.numpy() * U).sum(axis=0)), 1.0, atol=1e-4)
    assert params.whiten and params.n_samples == 40 and "feats.h5:all" in params.source

    # --subset query with fewer rows than --samples uses every query row; --no-whiten is recorded.
    assert cli.main(["fit-pca", "--features", str(feats), "--out", str(out), "--dim", "4",
                     "--subset", "query", "--no-whiten"]) == 0
    params = load_pca(out)
    np.testing.assert_allclose(params.lams.numpy(), numpy_pca(X[50:], 4)[0], rtol=1e-4)
    assert not params.whiten and params.n_samples == 20


def test_fit_pca_command_errors(tmp_path, capsys):
    out = tmp_path / "pca.h5"
    assert cli.main(["fit-pca", "--features", str(tmp_path / "none.h5"), "--out", str(out)]) == 2
    assert "none.h5: features file not found (create it with 'vpr extract')" in capsys.readouterr().err
    assert not out.exists()
    with h5py.File(tmp_path / "dbonly.h5", "w") as f:
        f.create_dataset("db", data=np.ones((5, 3), np.float32))
        f.attrs["kind"] = "vpr-features"
    assert cli.main(["fit-pca", "--features", str(tmp_path / "dbonly.h5"), "--out", str(out)]) == 2
    assert "has no dataset 'query'" in capsys.readouterr().err and not out.exists()
    write_features(tmp_path / "one.h5", np.ones((1, 3), np.float32), np.ones((0, 3), np.float32))
    assert cli.main(["fit-pca", "--features", str(tmp_path / "one.h5"), "--out", str(out)]) == 2
    assert "PCA needs at least 2" in capsys.readouterr().err and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dbonly.h5", "one.h5"]


def test_fit_pca_refuses_whitening_the_sample_cannot_support(tmp_path, capsys):
    """The issue's case: 22 descriptors, 256 components asked for. Whitened with k = N - 1 = 21 they would
    be a regular simplex: all squared distances 2 + 2/21 after normalisation (checked here by hand)."""
    X = data(22, 64, seed=5)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    lams, U = numpy_pca(X, 21)
    Y = (X - X.mean(axis=0)) @ (U / np.sqrt(lams))
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    d = ((Y[:, None] - Y[None]) ** 2).sum(-1)[np.triu_indices(22, 1)]
    np.testing.assert_allclose(d, 2 + 2 / 21, rtol=1e-6)

    feats, out = tmp_path / "feats.h5", tmp_path / "pca.h5"
    write_features(feats, X[:17], X[17:])
    assert cli.main(["fit-pca", "--features", str(feats), "--out", str(out), "--dim", "256"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "feats.h5" in err[0] and "needs at least 42 training descriptors, there are 22" \
        in err[0] and "pca.dim (--dim) to at most 11" in err[0] and "--no-whiten" in err[0], err
    assert not out.exists()
    # Half the sample (11 = 22 // 2) is allowed, and without whitening the cap at N - 1 stays.
    assert cli.main(["fit-pca", "--features", str(feats), "--out", str(out), "--dim", "11"]) == 0
    assert load_pca(out).dim == 11
    out.unlink()
    assert cli.main(["fit-pca", "--features", str(feats), "--out", str(out), "--dim", "256",
                     "--no-whiten"]) == 0
    assert load_pca(out).dim == 21


def test_fit_pca_refuses_whitening_rounding_noise(tmp_path, capsys):
    # 40 descriptors that are 8 distinct ones repeated (near-duplicate images): beyond 7 components the
    # eigenvalues are rounding noise, which whitening would blow up to unit variance.
    base = data(8, 32, seed=6)
    X = np.repeat(base, 5, axis=0)
    feats, out = tmp_path / "feats.h5", tmp_path / "pca.h5"
    write_features(feats, X[:30], X[30:])
    assert cli.main(["fit-pca", "--features", str(feats), "--out", str(out), "--dim", "12"]) == 2
    err = capsys.readouterr().err
    assert "below 1e-06 times the largest" in err and "at most 7" in err and not out.exists()
    assert cli.main(["fit-pca", "--features", str(feats), "--out", str(out), "--dim", "7"]) == 0
