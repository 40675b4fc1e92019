"""``replication.factor_models`` (CA of Gu, Kelly & Xiu; Linear = IPCA) against numpy.

The characteristics (cross-sectional ranks in [-1, 1]) are checked against
``scipy.stats.rankdata``. The numpy functions are written from the documented
equations, read the module's own weights, and run in float64 (the module is converted
with ``.double()``); batch-norm parameters and running statistics are randomised first
so that train and eval mode differ. Then the interface: shapes for any N (N < C
included), permutation equivariance, lambda = the mean of the training factors (a
state-dict buffer), predictions that never read returns and see the day's other
stocks only through the ranks, no look-ahead on the synthetic market, and a two-epoch
run of each model through the runner that ranks the synthetic test days better than
chance.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

import replication.run as R
from replication.data import load_market
from replication.data.dataset import DataConfig, build, prepare
from replication.factor_models import (CA, HIDDEN, CAConfig, Linear, LinearConfig, characteristics,
                                       managed_portfolios)
from replication.synthetic import split
from replication.train import DeviceData, predict

C, K, T = 5, 3, 4  # small dims; C < 50 but > 1, 2: both over- and underdetermined days
RTOL, ATOL = 1e-10, 1e-12


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------- helpers
def npw(p: torch.Tensor) -> np.ndarray:
    return p.detach().cpu().numpy().astype(np.float64)


def lin(h, layer):
    return h @ npw(layer.weight).T + npw(layer.bias)


def tt(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def tn(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def close(a, b, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(tn(a) if isinstance(a, torch.Tensor) else a, b, rtol=rtol, atol=atol)


def make(name: str, seed: int = 0, **cfg):
    """"linear" or a CA variant ("ca0".."ca3"), float64, batch norm randomised."""
    torch.manual_seed(seed)
    if name == "linear":
        return Linear(LinearConfig.make(C=C, K=K, **cfg)).double()
    model = CA(CAConfig.make(C=C, K=K, variant=name, **{"l1": 0.01, **cfg})).double()
    g = torch.Generator().manual_seed(seed + 100)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            for t, lo, hi in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.5, 2.0),
                              (m.weight, 0.5, 1.5), (m.bias, -0.3, 0.3)):
                with torch.no_grad():
                    t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g, dtype=t.dtype))
    return model


def tied_columns(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, C = 5) features with the ties of the real ones: few distinct values, clipping,
    a constant column, 0.0 next to -0.0 (equal), and one tie-free column."""
    assert C == 5
    return np.column_stack([rng.integers(-2, 3, n).astype(float),
                            np.clip(rng.normal(size=n), -0.5, 0.5),
                            np.full(n, 0.7),
                            rng.choice([0.0, -0.0, 1.0], n),
                            rng.normal(size=n)])


def inputs(n: int, seed: int = 1):
    """x (n, T, C) whose last day has ties (:func:`tied_columns`), y (n,)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, T, C))
    x[:, -1] = tied_columns(n, rng)
    return x, rng.normal(size=n)


# ------------------------------------------------------- numpy re-implementation
def np_characteristics(x):
    """z: the last day's features, each ranked across the stocks with scipy's average
    ranks and mapped to [-1, 1] by 2 (rank - 1) / (N - 1) - 1; 0 for a single stock."""
    last = np.asarray(x, dtype=np.float64)[:, -1, :]
    n = len(last)
    if n == 1:
        return np.zeros_like(last)
    ranks = np.column_stack([rankdata(col, method="average") for col in last.T])
    return 2 * (ranks - 1) / (n - 1) - 1


def np_ls(a, b):
    """The documented ridge least squares (a^T a + rho I)^{-1} a^T b, rho = 1e-6 *
    mean(diag(a^T a)) + 1e-30; test_managed_portfolios_against_lstsq ties it to lstsq."""
    ata = a.T @ a
    return np.linalg.solve(ata + (1e-6 * np.mean(np.diag(ata)) + 1e-30) * np.eye(len(ata)), a.T @ b)


def np_beta_ca(z, model, train: bool):
    """Beta network: hidden layers ReLU(BN(W h + b)) with the widths of GKX's variant,
    then beta = W h + b. BN: the batch's mean and biased variance (train) or the
    running statistics (eval)."""
    linears = [m for m in model.beta.modules() if isinstance(m, torch.nn.Linear)]
    bns = [m for m in model.beta.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    hidden = HIDDEN[model.cfg.variant]
    assert [m.out_features for m in linears] == list(hidden) + [K] and len(bns) == len(hidden)
    h = z
    for layer, bn in zip(linears[:-1], bns):
        a = lin(h, layer)
        if train:
            mean, var = a.mean(axis=0), a.var(axis=0)
        else:
            mean, var = npw(bn.running_mean), npw(bn.running_var)
        a = (a - mean) / np.sqrt(var + bn.eps) * npw(bn.weight) + npw(bn.bias)
        h = np.maximum(a, 0.0)
    return lin(h, linears[-1])


def np_factors_ca(z, y, model):
    """f_t = W x_t + b, x_t = (Z^T Z)^{-1} Z^T y (with the ridge)."""
    return lin(np_ls(z, y), model.factor.map)


def np_l1(model):
    weights = [m.weight for m in model.beta.modules() if isinstance(m, torch.nn.Linear)]
    weights.append(model.factor.map.weight)
    return model.cfg.l1 * sum(np.abs(npw(w)).sum() for w in weights)


def np_beta_f(name, z, y, model, train=True):
    if name == "linear":
        beta = lin(z, model.gamma)
        return beta, np_ls(beta, y)
    return np_beta_ca(z, model, train), np_factors_ca(z, y, model)


def np_loss(name, x, y, model):
    z = np_characteristics(x)
    beta, f = np_beta_f(name, z, y, model)
    mse = np.mean((y - beta @ f) ** 2)
    return mse + (0.0 if name == "linear" else np_l1(model)), mse


# ----------------------------------------------------------------------- tests
def test_configs_and_structure():
    with pytest.raises(ValueError, match="unknown CA variant"):
        CAConfig.make(variant="ca4")
    with pytest.raises(ValueError, match="unknown CAConfig keys"):
        CAConfig.make(variants="ca1")
    widths = {v: [m.out_features for m in CA(CAConfig.make(variant=v)).beta.modules()
                  if isinstance(m, torch.nn.Linear)] for v in HIDDEN}
    assert widths == {"ca0": [6], "ca1": [32, 6], "ca2": [32, 16, 6], "ca3": [32, 16, 8, 6]}
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in CA(CAConfig.make(variant="ca0")).modules())
    assert [type(m).__name__ for m in CA(CAConfig.make(variant="ca1")).beta.net] == \
        ["Linear", "CrossSectionBatchNorm", "ReLU", "Linear"]  # BN before the non-linearity
    linear = Linear()
    assert [n for n, _ in linear.named_parameters()] == ["gamma.weight", "gamma.bias"]


def test_characteristics_against_rankdata():
    rng = np.random.default_rng(0)
    # by hand: ranks (3.5, 1, 3.5, 2) -> 2 (rank - 1) / 3 - 1
    x = np.zeros((4, T, 1))
    x[:, -1, 0] = [3.0, 1.0, 3.0, 2.0]
    close(characteristics(tt(x)), [[2 / 3], [-1.0], [2 / 3], [-1 / 3]])
    for n in (1, 2, 3, 50, 4000):
        x = rng.normal(size=(n, T, C))
        x[:, -1] = tied_columns(n, rng)
        z = characteristics(tt(x))
        assert z.shape == (n, C) and z.dtype == torch.float64
        close(z, np_characteristics(x))  # every column, ties included
        if n == 2:  # by hand: the distinct pair -> (-1, 1) in some order; ties -> 0
            assert sorted(tn(z[:, 4])) == [-1.0, 1.0] and (tn(z[:, 2]) == 0).all()
        assert (tn(z).min() >= -1) and (tn(z).max() <= 1)
        close(tn(z).mean(axis=0), np.zeros(C), atol=1e-12)  # average ranks: mean exactly 0
        # only the last day is read
        other = x.copy()
        other[:, :-1] = rng.normal(size=other[:, :-1].shape)
        close(characteristics(tt(other)), tn(z), rtol=0, atol=0)
        # float32 in, float32 out, the same ranks
        z32 = characteristics(torch.tensor(x, dtype=torch.float32))
        assert z32.dtype == torch.float32
        close(z32.double(), np_characteristics(x.astype(np.float32)), rtol=0, atol=1e-6)
    assert (tn(characteristics(tt(rng.normal(size=(1, T, C))))) == 0).all()  # N = 1 -> 0


def test_managed_portfolios_against_lstsq():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(50, C)) + 0.3, rng.normal(size=50)  # N > C: full rank
    x_port = tn(managed_portfolios(tt(z), tt(y)))
    exact = np.linalg.lstsq(z, y, rcond=None)[0]
    close(x_port, exact, rtol=1e-5, atol=1e-6 * np.abs(exact).max())
    # exactly the documented ridge solve
    ztz = z.T @ z
    close(x_port, np_ls(z, y))
    # the paper's formula without ridge differs only at the 1e-6 level
    assert not np.array_equal(x_port, np.linalg.solve(ztz, z.T @ y))
    # N < C: Z^T Z singular; the ridge solution is finite and ~ the minimum-norm one
    for n in (1, 2, 3):
        small = tn(managed_portfolios(tt(z[:n]), tt(y[:n])))
        assert np.isfinite(small).all()
        mn = np.linalg.lstsq(z[:n], y[:n], rcond=None)[0]
        close(small, mn, rtol=1e-4, atol=1e-4 * np.abs(mn).max())
    # float32 input: solved in float64, returned in float32
    out = managed_portfolios(torch.tensor(z, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    assert out.dtype == torch.float32
    close(out.double(), exact, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["ca0", "ca3", "linear"])
def test_loss_and_predict_against_numpy(name):
    model = make(name)
    x, y = inputs(40)
    z = np_characteristics(x)
    model.train()
    loss, mse, kl = model.loss(tt(x), tt(y))
    loss_np, mse_np = np_loss(name, x, y, model)
    assert loss.shape == mse.shape == kl.shape == ()
    close(mse, mse_np)
    close(loss, loss_np)
    assert float(kl) == 0.0
    if name != "linear":
        assert loss_np - mse_np > 1e-3  # the L1 penalty is in the loss
    # the pieces: exposures (train and eval mode) and factors
    beta_np, f_np = np_beta_f(name, z, y, model)
    close(model.exposures(tt(z)), beta_np)
    close(model.factors(tt(z), tt(beta_np), tt(y)), f_np)
    model.eval()
    beta_eval = np_beta_f(name, z, y, model, train=False)[0]
    close(model.exposures(tt(z)), beta_eval)
    if name == "ca3":
        assert not np.allclose(beta_eval, beta_np)  # batch norm: the two modes differ
    lam = np.random.default_rng(9).normal(size=K)
    model.lam.copy_(tt(lam))
    mu, sigma = model.predict(tt(x))
    close(mu, beta_eval @ lam)
    assert torch.isnan(sigma).all() and sigma.shape == (40,)


@pytest.mark.parametrize("name", ["ca0", "ca2", "ca3", "linear"])
@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_shapes_any_number_of_stocks(name, n):
    """N < C (here C = 5) or even N < K: the ridge keeps the solves finite; one stock
    in training: batch norm falls back to its running statistics."""
    model = make(name).float()
    x, y = (torch.tensor(a, dtype=torch.float32) for a in inputs(n))
    model.train()
    loss, mse, kl = model.loss(x, y)
    assert loss.shape == mse.shape == kl.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    model.lam.fill_(0.5)
    mu, sigma = model.predict(x)
    assert mu.shape == sigma.shape == (n,) and torch.isfinite(mu).all() and torch.isnan(sigma).all()


@pytest.mark.parametrize("name", ["ca0", "ca3", "linear"])
def test_permutation_equivariance(name):
    model = make(name)
    x, y = inputs(30)
    perm = np.random.default_rng(3).permutation(30)
    model.lam.copy_(tt([0.3, -0.2, 0.1]))
    model.train()
    loss_a = model.loss(tt(x), tt(y))[0]
    loss_b = model.loss(tt(x[perm]), tt(y[perm]))[0]
    close(loss_b, tn(loss_a), rtol=1e-9)
    model.eval()
    mu = tn(model.predict(tt(x))[0])
    close(model.predict(tt(x[perm]))[0], mu[perm])


@pytest.mark.parametrize("name", ["ca3", "linear"])
def test_predict_never_reads_returns(name):
    """predict takes no y; losses on other returns (eval mode: no batch-norm update)
    leave no trace that predict could read."""
    model = make(name)
    assert list(inspect.signature(model.predict).parameters) == ["x"]
    x, _ = inputs(20)
    model.lam.copy_(tt([0.3, -0.2, 0.1]))
    model.eval()
    mu = tn(model.predict(tt(x))[0])
    for seed in range(3):
        model.loss(tt(x), tt(np.random.default_rng(seed).normal(size=20) * 10 + seed))
        close(model.predict(tt(x))[0], mu, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["ca3", "linear"])
def test_predict_sees_other_stocks_only_through_the_ranks(name):
    """Eval mode. Other stocks' features changed by a strictly increasing map that
    fixes stock 0's value (ties stay ties), and every stock's earlier days changed:
    no rank moves, so no prediction moves. One stock passing stock 0 in one feature
    moves stock 0's rank, and its prediction."""
    model = make(name)
    x, _ = inputs(20)
    model.lam.copy_(tt([0.3, -0.2, 0.1]))
    model.eval()
    mu = tn(model.predict(tt(x))[0])
    other = x.copy()
    other[:, :-1] = np.random.default_rng(5).normal(size=other[:, :-1].shape) * 2 + 1
    x0 = x[0, -1]  # (C,)
    other[1:, -1] = x[1:, -1] + 3 * (x[1:, -1] - x0) ** 3  # v -> v + 3 (v - x0)^3
    assert np.abs(other[1:, -1] - x[1:, -1]).max() > 1  # the raw features did change
    close(characteristics(tt(other)), np_characteristics(x), rtol=0, atol=0)
    close(model.predict(tt(other))[0], mu, rtol=0, atol=0)
    crossed = x.copy()
    j = np.argmin(np.abs(x[1:, -1, 4] - x0[4])) + 1  # the nearest stock in the tie-free column
    crossed[j, -1, 4] = x0[4] - 0.01 * np.sign(x[j, -1, 4] - x0[4])  # ... passes stock 0
    assert abs(model.predict(tt(crossed))[0][0].item() - mu[0]) > 1e-6 * abs(mu[0])


# ------------------------------------------------------------ on the synthetic market
@pytest.fixture(scope="module")
def market(synthetic_dir):
    return load_market(synthetic_dir)


@pytest.fixture(scope="module")
def dataset(market):
    cfg = DataConfig.make(universe="all", **split())
    return build(prepare(market, cfg), cfg)


@pytest.mark.parametrize("name", ["ca", "linear"])
def test_after_epoch_sets_lambda_to_the_mean_training_factor(name, dataset):
    torch.manual_seed(0)
    model = CA(CAConfig.make(variant="ca2")) if name == "ca" else Linear()
    data = DeviceData(dataset, torch.device("cpu"))
    model.train()
    for k in range(5):  # a few steps' worth of batch-norm statistics
        model.loss(*data.batch("train", k))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.after_epoch(data)
    assert model.training  # mode restored
    for k, v in model.state_dict().items():  # only lambda changed (no running-stat update)
        assert torch.equal(v, state[k]) != (k == "lam"), k
    fs = []
    for k in range(len(dataset.splits["train"].days)):
        x, y = (npw(a) for a in data.batch("train", k))
        z = np_characteristics(x)
        if name == "ca":
            fs.append(np_factors_ca(z, y, model))
        else:
            fs.append(np_ls(lin(z, model.gamma), y))
    lam = np.mean(fs, axis=0)
    assert np.abs(lam).max() > 1e-3
    close(model.lam, lam, rtol=1e-5, atol=1e-5 * np.abs(fs).max())  # float32 model
    # lambda travels with the state dict (the best epoch's weights are restored with it)
    assert "lam" in model.state_dict()
    fresh = CA(CAConfig.make(variant="ca2")) if name == "ca" else Linear()
    fresh.load_state_dict(model.state_dict())
    mu, _ = predict(model, data, "valid")
    mu_fresh, _ = predict(fresh, data, "valid")
    np.testing.assert_array_equal(mu, mu_fresh)


@pytest.mark.parametrize("name", ["ca", "linear"])
def test_predictions_up_to_day_s_ignore_data_after_s(name, market, dataset, scramble):
    """As tests/test_run.py's FactorVAE test: same weights, market scrambled after a test
    day s; lambda from the (untouched) training days; every prediction up to s is equal."""
    cfg = DataConfig.make(universe="all", **split())
    s = int(dataset.splits["test"].days[50])
    other = build(prepare(scramble(market, s), cfg), cfg)
    torch.manual_seed(0)
    model = CA(CAConfig.make(variant="ca2")) if name == "ca" else Linear()
    data_a, data_b = DeviceData(dataset, torch.device("cpu")), DeviceData(other, torch.device("cpu"))
    model.train()
    for k in range(5):
        model.loss(*data_a.batch("train", k))
    model.after_epoch(data_a)
    lam = model.lam.clone()
    mu_a, _ = predict(model, data_a, "test")
    model.after_epoch(data_b)
    assert torch.equal(model.lam, lam)
    mu_b, _ = predict(model, data_b, "test")
    sp = dataset.splits["test"]
    upto = sp.offsets[np.searchsorted(sp.days, s, side="right")]
    np.testing.assert_array_equal(mu_a[:upto], mu_b[:upto])
    assert not np.array_equal(mu_a[upto:], mu_b[upto:])


def test_registry_and_defaults():
    data = DataConfig(universe="csi300")
    ca, linear = R.run_config("ca", 0, data), R.run_config("linear", 0, data)
    assert ca["model_config"] == {"C": 20, "K": 6, "variant": "ca2", "l1": 1e-4}
    assert linear["model_config"] == {"C": 20, "K": 6}
    assert ca["train"]["lr"] == linear["train"]["lr"] == 1e-3
    ca0 = R.run_config("ca", 0, data, {"variant": "ca0"})
    assert len({R.run_id(c) for c in (ca, ca0, linear)}) == 3
    assert R.MODELS["linear"].build is Linear and R.MODELS["ca"].build is CA
    assert "factorvae" in R.MODELS  # the registry was extended, not replaced


@pytest.mark.parametrize("name", ["ca", "linear"])
def test_runner_smoke_beats_random_ranking(name, market, tmp_path_factory, monkeypatch):
    base = tmp_path_factory.getbasetemp() / "factor_models_smoke"  # one dataset cache for both
    monkeypatch.setenv("REPLICATION_CACHE", str(base / "cache"))
    cfg = R.run_config(name, 0, DataConfig.make(universe="csi300", **split()), {},
                       {"max_epochs": 2, "patience": 2})
    r = R.execute(cfg, device="cpu", progress=False, market=market, out=base / "runs",
                  results=base / "results")
    assert r["epochs_trained"] == 2 and r["config"]["model"] == name
    assert r["test"]["rank_ic"] > 0  # random ranking: 0
    preds = np.load(base / "results" / f"{r['run_id']}.npz")
    assert np.isnan(preds["sigma"]).all() and np.isfinite(preds["mu"]).all()
