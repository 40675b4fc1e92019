"""``replication.model`` (FactorVAE, eqs. 4-19) against an independent numpy version.

Every numpy function below is written from the paper's equations (and, for the GRU
cell, from PyTorch's documented gate equations), reads the module's own weights with
``.detach().numpy()``, and runs in float64 on random inputs; the module is converted
with ``.double()`` so the two agree to ~1e-12. Property tests (portfolio weights and
attention rows sum to 1, the all-cosines-<=-0 head, stock-permutation equivariance,
any N, ``predict`` never touching the encoder) run on the module itself, and the last
tests show the comparisons can fail: deliberately wrong numpy variants are told apart.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from replication.model import FactorVAE, ModelConfig

RTOL = 1e-10
ATOL = 1e-12
SMALL = dict(C=5, H=8, K=4, M=6, leaky_slope=0.13)  # small dims, non-default slope
T, N = 7, 11


# ----------------------------------------------------------------------- helpers
def npw(p: torch.Tensor) -> np.ndarray:
    return p.detach().cpu().numpy().astype(np.float64)


def lin(x, layer):
    """nn.Linear: x W^T + b, from the module's weights."""
    return x @ npw(layer.weight).T + npw(layer.bias)


def leaky(x, slope):
    return np.where(x >= 0, x, slope * x)


def softplus(x):
    return np.logaddexp(0.0, x)  # log(1 + exp(x)), exact (no threshold)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def make_model(seed=0, **cfg) -> FactorVAE:
    torch.manual_seed(seed)
    return FactorVAE(ModelConfig.make(**{**SMALL, **cfg})).double()


def inputs(seed=1, n=N, t=T, c=SMALL["C"]):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, c))
    y = 0.03 * rng.normal(size=n)
    return x, y


def tt(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def tn(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# ------------------------------------------------------- numpy re-implementation
def np_gru_last(seq, gru):
    """Last hidden state of a 1-layer GRU, h_0 = 0, per PyTorch's documented cell:
    r = s(W_ir x + b_ir + W_hr h + b_hr); z = s(W_iz x + b_iz + W_hz h + b_hz);
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); h' = (1 - z) * n + z * h.
    Weights are stacked [r | z | n] along dim 0."""
    W_ir, W_iz, W_in = np.split(npw(gru.weight_ih_l0), 3, axis=0)
    W_hr, W_hz, W_hn = np.split(npw(gru.weight_hh_l0), 3, axis=0)
    b_ir, b_iz, b_in = np.split(npw(gru.bias_ih_l0), 3)
    b_hr, b_hz, b_hn = np.split(npw(gru.bias_hh_l0), 3)
    n_stocks, n_steps, _ = seq.shape
    h = np.zeros((n_stocks, W_hr.shape[1]))
    for t in range(n_steps):
        xt = seq[:, t]
        r = sigmoid(xt @ W_ir.T + b_ir + h @ W_hr.T + b_hr)
        z = sigmoid(xt @ W_iz.T + b_iz + h @ W_hz.T + b_hz)
        n = np.tanh(xt @ W_in.T + b_in + r * (h @ W_hn.T + b_hn))
        h = (1.0 - z) * n + z * h
    return h


def np_feature(x, model):
    """Eq. 4: h_proj = LeakyReLU(w_proj x + b_proj); e = GRU hidden state at T."""
    f = model.feature
    h_proj = leaky(lin(x, f.proj), model.cfg.leaky_slope)  # (N, T, H)
    return np_gru_last(h_proj, f.gru)


def np_softmax(a, axis):
    a = a - a.max(axis=axis, keepdims=True)
    ex = np.exp(a)
    return ex / ex.sum(axis=axis, keepdims=True)


def np_portfolio_weights(e, model, axis=0):
    """Eq. 6: a_p (N, M), softmax over the N stocks (axis=0). axis=1 is the WRONG variant."""
    return np_softmax(lin(e, model.encoder.portfolio), axis=axis)


def np_encoder(y, e, model, softmax_axis=0, port=False, ridge=False):
    """Eqs. 6-8 (or the FactorVAE-port y_p = (e^T e)^{-1} e^T y)."""
    enc = model.encoder
    if port:
        ete = e.T @ e
        if ridge:
            ete = ete + 1e-6 * np.mean(np.diag(ete)) * np.eye(len(ete))
        y_p = np.linalg.solve(ete, e.T @ y)
    else:
        a_p = np_portfolio_weights(e, model, axis=softmax_axis)
        y_p = np.array([sum(y[i] * a_p[i, j] for i in range(len(y))) for j in range(a_p.shape[1])])
    return lin(y_p, enc.map_mu), softplus(lin(y_p, enc.map_sigma))


def np_alpha_beta(e, model):
    """Eq. 10 (alpha layer) and eq. 11 (beta layer)."""
    d = model.decoder
    h = leaky(lin(e, d.alpha_hidden), model.cfg.leaky_slope)
    mu_alpha = lin(h, d.alpha_mu)[:, 0]
    sigma_alpha = softplus(lin(h, d.alpha_sigma))[:, 0]
    beta = lin(e, d.beta)
    return mu_alpha, sigma_alpha, beta


def np_decoder(e, mu_z, sigma_z, model, with_factor_var=True):
    """Eq. 12; with_factor_var=False is the WRONG variant (drops sum_k beta^2 sigma_z^2)."""
    mu_alpha, sigma_alpha, beta = np_alpha_beta(e, model)
    n_stocks, n_factors = beta.shape
    mu_y = np.array([mu_alpha[i] + sum(beta[i, k] * mu_z[k] for k in range(n_factors))
                     for i in range(n_stocks)])
    var = sigma_alpha ** 2
    if with_factor_var:
        var = var + np.array([sum(beta[i, k] ** 2 * sigma_z[k] ** 2 for k in range(n_factors))
                              for i in range(n_stocks)])
    return mu_y, np.sqrt(var)


def np_attention(e, model):
    """Eq. 14 for every head k: a_att (K, N) and h_multi (K, H) (eq. 15)."""
    p = model.predictor
    q_all, Wk_all, Wv_all = npw(p.query), npw(p.key), npw(p.value)
    n_heads = q_all.shape[0]
    att = np.zeros((n_heads, len(e)))
    h_multi = np.zeros((n_heads, Wv_all.shape[1]))
    for k in range(n_heads):
        q, W_key, W_value = q_all[k], Wk_all[k], Wv_all[k]
        keys = np.stack([W_key @ e_i for e_i in e])  # k_i = W_key e_i, (N, H)
        vals = np.stack([W_value @ e_i for e_i in e])  # v_i = W_value e_i
        cos = np.array([q @ k_i / (np.linalg.norm(q) * np.linalg.norm(k_i)) for k_i in keys])
        score = np.maximum(0.0, cos)
        att[k] = score / score.sum() if score.sum() > 0 else 0.0
        h_multi[k] = att[k] @ vals
    return att, h_multi


def np_distribution(h_multi, model):
    """Eq. 16: the eq.-10-like distribution network applied to each head's row."""
    p = model.predictor
    h = leaky(lin(h_multi, p.hidden), model.cfg.leaky_slope)
    return lin(h, p.mu)[:, 0], softplus(lin(h, p.sigma))[:, 0]


def np_predictor(e, model):
    return np_distribution(np_attention(e, model)[1], model)


def np_nll(y, mu, sigma):
    """-(1/N) sum_i log N(y_i; mu_i, sigma_i^2)."""
    return np.mean(np.log(sigma) + 0.5 * ((y - mu) / sigma) ** 2 + 0.5 * np.log(2 * np.pi))


def np_kl(mu_q, s_q, mu_p, s_p):
    """KL(N(mu_q, diag s_q^2) || N(mu_p, diag s_p^2)), closed form, summed over factors."""
    return np.sum(np.log(s_p) - np.log(s_q) + (s_q ** 2 + (mu_q - mu_p) ** 2) / (2 * s_p ** 2) - 0.5)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one intra-op thread is faster, and on a shared 2-core box
    torch's spinning worker threads slow the module ~10x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def close(a, b, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(tn(a) if isinstance(a, torch.Tensor) else a, b, rtol=rtol, atol=atol)


# --------------------------------------------------------------------- eq. 4
def test_eq4_feature_extractor():
    model = make_model()
    x, _ = inputs()
    e_np = np_feature(x, model)
    assert e_np.shape == (N, SMALL["H"])
    close(model.feature(tt(x)), e_np)


# ------------------------------------------------------------------ eqs. 6-8
def module_portfolio_weights(model, e):
    """a_p read off the module: y_p = y @ a_p is linear in y, so y = unit vector i gives row i."""
    with torch.no_grad():
        rows = [model.encoder.portfolio_returns(tt(np.eye(len(e))[i]), tt(e)) for i in range(len(e))]
    return tn(torch.stack(rows))  # (N, M)


def test_eq6_7_portfolio_weights_and_returns():
    model = make_model()
    rng = np.random.default_rng(2)
    e, y = rng.normal(size=(N, SMALL["H"])), 0.03 * rng.normal(size=N)
    a_np = np_portfolio_weights(e, model)
    close(module_portfolio_weights(model, e), a_np)
    close(model.encoder.portfolio_returns(tt(y), tt(e)), y @ a_np)


def test_eq6_8_factor_encoder():
    model = make_model()
    rng = np.random.default_rng(3)
    e, y = rng.normal(size=(N, SMALL["H"])), 0.03 * rng.normal(size=N)
    mu, sigma = model.encoder(tt(y), tt(e))
    mu_np, sigma_np = np_encoder(y, e, model)
    assert mu.shape == sigma.shape == (SMALL["K"],)
    close(mu, mu_np)
    close(sigma, sigma_np)
    assert (tn(sigma) > 0).all()


def test_factorvae_port_encoder():
    model = make_model(variant="factorvae-port")
    assert not hasattr(model.encoder, "portfolio")
    assert model.encoder.map_mu.in_features == SMALL["H"]
    rng = np.random.default_rng(4)
    e, y = rng.normal(size=(40, SMALL["H"])), 0.03 * rng.normal(size=40)  # N > H: e^T e invertible
    y_p = tn(model.encoder.portfolio_returns(tt(y), tt(e)))
    # the paper's exact formula, up to the documented 1e-6 * mean(diag) ridge
    # (norm-wise 1e-6: the ridge shifts each component by ~1e-6 * |y_p|, not by 1e-6 of itself)
    exact = np.linalg.solve(e.T @ e, e.T @ y)
    close(y_p, exact, rtol=1e-6, atol=1e-6 * np.abs(exact).max())
    close(y_p, np.linalg.lstsq(e, y, rcond=None)[0], rtol=1e-6, atol=1e-6 * np.abs(exact).max())
    # and the ridge exactly as documented
    close(y_p, np.linalg.solve(e.T @ e + 1e-6 * np.mean(np.diag(e.T @ e)) * np.eye(SMALL["H"]), e.T @ y))
    mu, sigma = model.encoder(tt(y), tt(e))
    mu_np, sigma_np = np_encoder(y, e, model, port=True)
    close(mu, mu_np, rtol=1e-6, atol=1e-6 * np.abs(mu_np).max())
    close(sigma, sigma_np, rtol=1e-6, atol=1e-6 * np.abs(sigma_np).max())
    mu_np, sigma_np = np_encoder(y, e, model, port=True, ridge=True)
    close(mu, mu_np)
    close(sigma, sigma_np)
    # fewer stocks than H: e^T e is singular, the ridge keeps it finite
    y_small = tn(model.encoder.portfolio_returns(tt(y[:3]), tt(e[:3])))
    assert np.isfinite(y_small).all()


# ----------------------------------------------------------------- eqs. 10-12
def test_eq10_12_factor_decoder():
    model = make_model()
    rng = np.random.default_rng(5)
    e = rng.normal(size=(N, SMALL["H"]))
    mu_z, sigma_z = rng.normal(size=SMALL["K"]), rng.uniform(0.2, 2.0, size=SMALL["K"])
    mu_alpha, sigma_alpha, beta = model.decoder.alpha_beta(tt(e))
    ma_np, sa_np, beta_np = np_alpha_beta(e, model)
    close(mu_alpha, ma_np)
    close(sigma_alpha, sa_np)
    close(beta, beta_np)
    assert beta.shape == (N, SMALL["K"])
    mu_y, sigma_y = model.decoder(tt(e), tt(mu_z), tt(sigma_z))
    mu_np, sigma_np = np_decoder(e, mu_z, sigma_z, model)
    close(mu_y, mu_np)
    close(sigma_y, sigma_np)
    # sigma_y > sigma_alpha strictly: the factor-variance term is present
    assert (tn(sigma_y) > tn(sigma_alpha)).all()


# ----------------------------------------------------------------- eqs. 14-16
def test_eq14_15_attention_and_h_multi():
    model = make_model()
    rng = np.random.default_rng(6)
    e = rng.normal(size=(N, SMALL["H"]))
    att_np, _ = np_attention(e, model)
    att = tn(model.predictor.attention(tt(e)))
    assert att.shape == (SMALL["K"], N)
    close(att, att_np)
    assert 0 < (att_np > 0).mean() < 1  # random weights: some, not all, cosines are positive


def test_eq16_factor_predictor():
    model = make_model()
    rng = np.random.default_rng(7)
    e = rng.normal(size=(N, SMALL["H"]))
    mu, sigma = model.predictor(tt(e))
    mu_np, sigma_np = np_predictor(e, model)
    assert mu.shape == sigma.shape == (SMALL["K"],)
    close(mu, mu_np)
    close(sigma, sigma_np)
    # h_multi is (K, H): each head gets its own row of the distribution network
    _, h_multi = np_attention(e, model)
    assert h_multi.shape == (SMALL["K"], SMALL["H"])


# --------------------------------------------------------------------- eq. 17
def test_factor_kl_terms_sum_to_the_loss_kl():
    torch.manual_seed(0)
    model = FactorVAE(ModelConfig(recon="analytic"))
    x, y = torch.randn(30, 20, 20), torch.randn(30)
    terms = model.factor_kl(x, y)
    _, _, kl = model.loss(x, y)
    assert terms.shape == (32,) and (terms >= 0).all()
    torch.testing.assert_close(terms.sum(), kl)


def test_gaussian_helpers():
    from replication.model import gaussian_kl, gaussian_nll

    rng = np.random.default_rng(8)
    y, mu, s = rng.normal(size=9), rng.normal(size=9), rng.uniform(0.1, 3, size=9)
    close(gaussian_nll(tt(y), tt(mu), tt(s)), np_nll(y, mu, s))
    # against scipy's independent log-pdf as well
    from scipy.stats import norm

    close(gaussian_nll(tt(y), tt(mu), tt(s)), -norm.logpdf(y, mu, s).mean())
    mq, sq, mp, sp = rng.normal(size=5), rng.uniform(0.1, 2, 5), rng.normal(size=5), rng.uniform(0.1, 2, 5)
    close(gaussian_kl(tt(mq), tt(sq), tt(mp), tt(sp)), np_kl(mq, sq, mp, sp))
    # KL(q || q) = 0, and it is not symmetric (direction: posterior || prior)
    close(gaussian_kl(tt(mq), tt(sq), tt(mq), tt(sq)), 0.0, atol=1e-14)
    assert not np.isclose(np_kl(mq, sq, mp, sp), np_kl(mp, sp, mq, sq))


@pytest.mark.parametrize("variant", ["factorvae", "factorvae-port"])
def test_eq17_loss_analytic(variant):
    model = make_model(variant=variant, gamma=0.7, recon="analytic")
    x, y = inputs(n=30 if variant == "factorvae-port" else N)
    loss, nll, kl = model.loss(tt(x), tt(y))
    e = np_feature(x, model)
    mu_post, sigma_post = np_encoder(y, e, model, port=variant == "factorvae-port", ridge=True)
    mu_prior, sigma_prior = np_predictor(e, model)
    mu_rec, sigma_rec = np_decoder(e, mu_post, sigma_post, model)
    nll_np = np_nll(y, mu_rec, sigma_rec)
    kl_np = np_kl(mu_post, sigma_post, mu_prior, sigma_prior)
    close(nll, nll_np)
    close(kl, kl_np)
    close(loss, nll_np + 0.7 * kl_np)
    assert kl_np > 0


def test_eq17_loss_sample():
    model = make_model(gamma=1.3, recon="sample")
    x, y = inputs()
    g = torch.Generator().manual_seed(1234)
    loss, nll, kl = model.loss(tt(x), tt(y), generator=g)
    eps = tn(torch.randn(SMALL["K"], generator=torch.Generator().manual_seed(1234), dtype=torch.float64)).astype(np.float64)
    e = np_feature(x, model)
    mu_post, sigma_post = np_encoder(y, e, model)
    mu_prior, sigma_prior = np_predictor(e, model)
    z_post = mu_post + sigma_post * eps  # reparameterised sample of eq. 5
    mu_alpha, sigma_alpha, beta = np_alpha_beta(e, model)
    nll_np = np_nll(y, mu_alpha + beta @ z_post, sigma_alpha)  # y_rec = alpha + beta z_post
    kl_np = np_kl(mu_post, sigma_post, mu_prior, sigma_prior)
    close(nll, nll_np)
    close(kl, kl_np)
    close(loss, nll_np + 1.3 * kl_np)
    # same seed -> same loss; another seed -> another nll, same kl
    again = model.loss(tt(x), tt(y), generator=torch.Generator().manual_seed(1234))[0]
    close(again, tn(loss))
    _, nll2, kl2 = model.loss(tt(x), tt(y), generator=torch.Generator().manual_seed(99))
    assert not np.isclose(tn(nll2), nll_np)
    close(kl2, kl_np)


# ----------------------------------------------------------------- eqs. 18-19
@pytest.mark.parametrize("variant", ["factorvae", "factorvae-prior", "factorvae-port"])
def test_eq18_19_predict(variant):
    model = make_model(variant=variant)
    x, _ = inputs()
    mu_pred, sigma_pred = model.predict(tt(x))
    e = np_feature(x, model)
    mu_prior, sigma_prior = np_predictor(e, model)
    mu_np, sigma_np = np_decoder(e, mu_prior, sigma_prior, model)
    close(mu_pred, mu_np)
    close(sigma_pred, sigma_np)
    # and it is literally decoder(e, mu_prior, sigma_prior) of the module
    e_t = model.feature(tt(x))
    mu_d, sigma_d = model.decoder(e_t, *model.predictor(e_t))
    close(mu_pred, tn(mu_d))
    close(sigma_pred, tn(sigma_d))


@pytest.mark.parametrize("recon", ["analytic", "sample"])
def test_factorvae_prior_variant(recon):
    model = make_model(variant="factorvae-prior", recon=recon, gamma=0.7)
    assert model.encoder is None
    x, y = inputs()
    g = torch.Generator().manual_seed(5)
    loss, nll, kl = model.loss(tt(x), tt(y), generator=g)
    assert float(kl) == 0.0
    e = np_feature(x, model)
    mu_prior, sigma_prior = np_predictor(e, model)
    if recon == "analytic":
        mu_rec, sigma_rec = np_decoder(e, mu_prior, sigma_prior, model)
    else:
        eps = tn(torch.randn(SMALL["K"], generator=torch.Generator().manual_seed(5), dtype=torch.float64)).astype(np.float64)
        mu_alpha, sigma_alpha, beta = np_alpha_beta(e, model)
        mu_rec, sigma_rec = mu_alpha + beta @ (mu_prior + sigma_prior * eps), sigma_alpha
    nll_np = np_nll(y, mu_rec, sigma_rec)
    close(nll, nll_np)
    close(loss, nll_np)


# ------------------------------------------------------------------ properties
def test_portfolio_weights_sum_to_one_over_stocks():
    model = make_model()
    rng = np.random.default_rng(9)
    e = 3 * rng.normal(size=(N, SMALL["H"]))
    # y = 1 for every stock -> y_p^(j) = sum_i a_p^(i,j), which must be 1 for every portfolio
    ones = tn(model.encoder.portfolio_returns(tt(np.ones(N)), tt(e)))
    close(ones, np.ones(SMALL["M"]), rtol=0, atol=1e-12)
    a_p = module_portfolio_weights(model, e)
    assert (a_p > 0).all()
    close(a_p.sum(axis=0), np.ones(SMALL["M"]), rtol=0, atol=1e-12)


def test_attention_rows_sum_to_one():
    model = make_model()
    rng = np.random.default_rng(10)
    e = rng.normal(size=(N, SMALL["H"]))
    att = tn(model.predictor.attention(tt(e)))
    assert (att >= 0).all()
    sums = att.sum(axis=1)
    assert np.all(np.isclose(sums, 1.0, rtol=0, atol=1e-12) | (sums == 0))
    assert np.isclose(sums, 1.0).any()


def test_attention_all_cosines_nonpositive():
    """Every key shares the positive orthant, every query points the other way: all
    cosines < 0, so the head's weights are 0 (not NaN) and h_att = 0."""
    model = make_model()
    K, H = SMALL["K"], SMALL["H"]
    p = model.predictor
    with torch.no_grad():
        p.key.copy_(torch.eye(H, dtype=torch.float64).expand(K, H, H))
        p.query.copy_(-torch.rand(K, H, dtype=torch.float64) - 0.1)
        p.query[0].copy_(torch.rand(H, dtype=torch.float64) + 0.1)  # head 0 stays positive
    rng = np.random.default_rng(11)
    e = tt(rng.uniform(0.1, 1.0, size=(N, H))).requires_grad_(True)
    att = p.attention(e)
    assert torch.isfinite(att).all()
    close(att[1:], np.zeros((K - 1, N)), rtol=0, atol=0)
    close(att[0].sum(), 1.0)
    att_np, h_multi_np = np_attention(tn(e), model)
    close(att, att_np)
    assert (h_multi_np[1:] == 0).all()
    mu, sigma = p(e)
    assert torch.isfinite(mu).all() and torch.isfinite(sigma).all()
    # the zero heads get the distribution network of h_att = 0
    mu0, sigma0 = np_distribution(np.zeros((1, H)), model)
    close(mu[1:], np.full(K - 1, mu0[0]))
    close(sigma[1:], np.full(K - 1, sigma0[0]))
    close(mu, np_predictor(tn(e), model)[0])
    # gradients stay finite through the clamped denominator
    (mu.sum() + sigma.sum()).backward()
    assert torch.isfinite(e.grad).all()
    assert all(torch.isfinite(q.grad).all() for q in (p.query, p.key, p.value) if q.grad is not None)


@pytest.mark.parametrize("variant", ["factorvae", "factorvae-prior", "factorvae-port"])
def test_stock_permutation_equivariance(variant):
    torch.manual_seed(0)
    model = FactorVAE(ModelConfig.make(variant=variant))  # default dims (H=64), float32
    n = 200 if variant == "factorvae-port" else 50  # port: N > H, see the test below
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, 20, 20, generator=gen)
    y = 0.03 * torch.randn(n, generator=gen)
    perm = torch.randperm(n, generator=gen)
    with torch.no_grad():
        mu, sigma = model.predict(x)
        mu_p, sigma_p = model.predict(x[perm])
        loss, _, _ = model.loss(x, y)
        loss_p, _, _ = model.loss(x[perm], y[perm])
    np.testing.assert_allclose(tn(mu_p), tn(mu)[tn(perm)], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tn(sigma_p), tn(sigma)[tn(perm)], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tn(loss_p), tn(loss), rtol=1e-5, atol=1e-5)


def test_port_float32_few_stocks_is_permutation_stable():
    torch.manual_seed(0)
    model = FactorVAE(ModelConfig.make(variant="factorvae-port"))  # H = 64, float32
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(50, 20, 20, generator=gen), 0.03 * torch.randn(50, generator=gen)
    perm = torch.randperm(50, generator=gen)
    with torch.no_grad():
        e = model.feature(x)
        y_p = model.encoder.portfolio_returns(y, e)
        y_p_perm = model.encoder.portfolio_returns(y[perm], e[perm])
        # the float64 solve of the same system is stable (N < H is fine mathematically)
        y_p64 = model.encoder.double().portfolio_returns(y.double(), e.double())
    np.testing.assert_allclose(tn(y_p_perm), tn(y_p), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(tn(y_p), tn(y_p64), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("variant", ["factorvae", "factorvae-prior", "factorvae-port"])
@pytest.mark.parametrize("recon", ["analytic", "sample"])
@pytest.mark.parametrize("n", [1, 2, 7, 500])
def test_any_number_of_stocks(n, recon, variant):
    torch.manual_seed(0)
    cfg = ModelConfig.make(variant=variant, recon=recon)  # default C=20, H=64, K=32, M=64
    model = FactorVAE(cfg)
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, 20, cfg.C, generator=gen)
    y = 0.03 * torch.randn(n, generator=gen)
    with torch.no_grad():
        mu, sigma = model.predict(x)
    assert mu.shape == sigma.shape == (n,)
    assert torch.isfinite(mu).all() and torch.isfinite(sigma).all() and (sigma > 0).all()
    loss, nll, kl = model.loss(x, y, generator=torch.Generator().manual_seed(0))
    assert loss.shape == nll.shape == kl.shape == ()
    assert torch.isfinite(loss) and torch.isfinite(kl) and kl.item() >= 0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("variant", ["factorvae", "factorvae-port"])
def test_predict_never_calls_encoder(variant):
    model = make_model(variant=variant)
    x, y = inputs()
    calls = []

    def boom(*args, **kwargs):
        raise AssertionError("predict called the encoder")

    def hook(module, args):
        calls.append(module)
        raise AssertionError("predict ran the encoder")

    model.encoder.forward = boom
    model.encoder.portfolio_returns = boom
    handle = model.encoder.register_forward_pre_hook(hook)
    with torch.no_grad():
        mu, sigma = model.predict(tt(x))
    assert not calls
    assert torch.isfinite(mu).all() and torch.isfinite(sigma).all()
    # the trap is live: the training loss does go through the encoder
    with pytest.raises(AssertionError, match="encoder"):
        model.loss(tt(x), tt(y))
    assert calls
    handle.remove()


def test_predict_ignores_encoder_weights():
    """Scrambling every encoder parameter changes the loss, not the prediction."""
    model = make_model()
    x, y = inputs()
    mu, sigma = model.predict(tt(x))
    loss = model.loss(tt(x), tt(y))[0]
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
    mu2, sigma2 = model.predict(tt(x))
    close(mu2, tn(mu), rtol=0, atol=0)
    close(sigma2, tn(sigma), rtol=0, atol=0)
    assert not np.isclose(tn(model.loss(tt(x), tt(y))[0]), tn(loss))


# ------------------------------------------------- the checks can fail
def test_wrong_softmax_axis_is_detected():
    model = make_model()
    rng = np.random.default_rng(12)
    e, y = rng.normal(size=(N, SMALL["H"])), 0.03 * rng.normal(size=N)
    a_mod = module_portfolio_weights(model, e)
    a_wrong = np_portfolio_weights(e, model, axis=1)  # softmax over the M portfolios
    assert not np.allclose(a_mod, a_wrong, rtol=1e-3, atol=0)
    with pytest.raises(AssertionError):
        close(a_mod, a_wrong)
    mu, sigma = model.encoder(tt(y), tt(e))
    mu_w, sigma_w = np_encoder(y, e, model, softmax_axis=1)
    with pytest.raises(AssertionError):
        close(mu, mu_w)
    # the right one still passes on the same data
    close(mu, np_encoder(y, e, model)[0])


def test_missing_factor_variance_is_detected():
    model = make_model()
    rng = np.random.default_rng(13)
    e = rng.normal(size=(N, SMALL["H"]))
    mu_z, sigma_z = rng.normal(size=SMALL["K"]), rng.uniform(0.2, 2.0, size=SMALL["K"])
    mu_y, sigma_y = model.decoder(tt(e), tt(mu_z), tt(sigma_z))
    mu_w, sigma_w = np_decoder(e, mu_z, sigma_z, model, with_factor_var=False)
    close(mu_y, mu_w)  # the mean is unaffected
    with pytest.raises(AssertionError):
        close(sigma_y, sigma_w)
    assert (tn(sigma_y) - sigma_w > 1e-6).all()
    # it also shows up in predict and in the analytic loss
    x, y = inputs()
    e_np = np_feature(x, model)
    mu_prior, sigma_prior = np_predictor(e_np, model)
    with pytest.raises(AssertionError):
        close(model.predict(tt(x))[1], np_decoder(e_np, mu_prior, sigma_prior, model, False)[1])
    mu_post, sigma_post = np_encoder(y, e_np, model)
    nll_wrong = np_nll(y, *np_decoder(e_np, mu_post, sigma_post, model, with_factor_var=False))
    with pytest.raises(AssertionError):
        close(model.loss(tt(x), tt(y))[1], nll_wrong)


def test_wrong_gru_gate_is_detected():
    """A GRU cell with the reset gate applied before W_hn (Cho et al. form) differs from
    PyTorch's, so the eq.-4 check pins down the cell."""
    model = make_model()
    x, _ = inputs()
    f = model.feature
    h_proj = leaky(lin(x, f.proj), model.cfg.leaky_slope)
    W_ir, W_iz, W_in = np.split(npw(f.gru.weight_ih_l0), 3, axis=0)
    W_hr, W_hz, W_hn = np.split(npw(f.gru.weight_hh_l0), 3, axis=0)
    b_ir, b_iz, b_in = np.split(npw(f.gru.bias_ih_l0), 3)
    b_hr, b_hz, b_hn = np.split(npw(f.gru.bias_hh_l0), 3)
    h = np.zeros((N, SMALL["H"]))
    for t in range(T):
        xt = h_proj[:, t]
        r = sigmoid(xt @ W_ir.T + b_ir + h @ W_hr.T + b_hr)
        z = sigmoid(xt @ W_iz.T + b_iz + h @ W_hz.T + b_hz)
        n = np.tanh(xt @ W_in.T + b_in + (r * h) @ W_hn.T + b_hn)
        h = (1.0 - z) * n + z * h
    with pytest.raises(AssertionError):
        close(model.feature(tt(x)), h)
    close(model.feature(tt(x)), np_feature(x, model))


def test_wrong_leaky_slope_is_detected():
    model = make_model()
    x, _ = inputs()
    other = make_model(leaky_slope=0.01)
    other.load_state_dict(model.state_dict())
    with pytest.raises(AssertionError):
        close(other.feature(tt(x)), np_feature(x, model))
    assert math.isclose(model.feature.act.negative_slope, SMALL["leaky_slope"])
