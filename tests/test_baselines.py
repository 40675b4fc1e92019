"""``replication.baselines``: the five Qlib baselines (GRU, ALSTM, Transformer, SFM, GAT).

Parametrised over the models: output shapes for any N, the shared interface (MSE loss,
NaN sigma), stock-permutation equivariance, which stocks a score may read (its own
window only, except GAT's attention over the whole day), no look-ahead through the
runner's day batches, and a short training run through :func:`replication.run.execute`
that must beat random ranking on the synthetic market. SFM's recurrence and GAT's
attention are checked against numpy versions written from the equations (and Qlib's
concatenation order), reading the module's own weights in float64; deliberately wrong
variants show those comparisons can fail.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import replication.run as R
from replication import baselines as B
from replication.data import load_market
from replication.data.dataset import DataConfig, build, prepare
from replication.synthetic import calendar, split
from replication.train import DeviceData

NAMES = tuple(B.MODELS)
QLIB_LR = {"gru": 2e-4, "alstm": 1e-3, "trans": 1e-4, "sfm": 1e-3, "gat": 1e-4}


def make(name: str, seed: int = 0, **cfg):
    config, cls, _ = B.MODELS[name]
    torch.manual_seed(seed)
    return cls(config.make(**cfg)).eval()


def inputs(n: int, seed: int = 1, t: int = 20, c: int = 20) -> torch.Tensor:
    return torch.randn(n, t, c, generator=torch.Generator().manual_seed(seed))


def npw(p: torch.Tensor) -> np.ndarray:
    return p.detach().numpy().astype(np.float64)


# ---------------------------------------------------------------- shapes, interface
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", (1, 2, 7, 50))
def test_output_shapes(name, n):
    model = make(name)
    x = inputs(n)
    for mode in (True, False):  # training (dropout on) and evaluation
        model.train(mode)
        score = model(x)
        assert score.shape == (n,) and score.dtype == torch.float32
        assert torch.isfinite(score).all()
    mu, sigma = model.predict(x)
    assert mu.shape == sigma.shape == (n,)


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_the_mse_and_predict_has_no_risk_estimate(name):
    model = make(name)
    x, y = inputs(9), torch.randn(9, generator=torch.Generator().manual_seed(2))
    loss, nll, kl = model.loss(x, y)
    score = model(x)
    assert loss.shape == nll.shape == kl.shape == ()
    torch.testing.assert_close(loss, ((score - y) ** 2).mean())
    assert loss.requires_grad and not nll.requires_grad and nll == loss and kl == 0
    mu, sigma = model.predict(x)
    assert torch.equal(mu, score) and torch.isnan(sigma).all()


def test_transformer_weight_decay_is_its_configs_and_the_others_have_none():
    assert make("trans").weight_decay == B.TransformerConfig().weight_decay == 1e-3  # Qlib's reg
    assert make("trans", weight_decay=0.02).weight_decay == 0.02
    for name in ("gru", "alstm", "sfm", "gat"):
        assert getattr(make(name), "weight_decay", 0.0) == 0.0


def test_registered_in_the_runner_with_qlibs_learning_rates():
    for name in NAMES:
        config, cls, _ = B.MODELS[name]
        cfg = R.run_config(name, 0, DataConfig(universe="csi300"))
        assert R.MODELS[name].build is cls and cfg["train"]["lr"] == QLIB_LR[name]
        assert cfg["model_config"] == json.loads(json.dumps(dataclasses.asdict(config())))


@pytest.mark.parametrize("name, count", [("gru", 41_537), ("alstm", 53_505), ("trans", 563_713),
                                         ("sfm", 26_087), ("gat", 49_985)])
def test_parameter_counts_are_the_documented_ones(name, count):
    """The table of the module docstring; pins the default architectures."""
    assert sum(p.numel() for p in make(name).parameters()) == count
    assert f"{count:,}" in B.__doc__


def test_rnn_choice():
    with pytest.raises(ValueError, match="rnn must be one of"):
        B.GATConfig.make(rnn="RNN")
    for name in ("alstm", "gat"):
        assert isinstance(make(name, rnn="LSTM").rnn, torch.nn.LSTM)
        assert make(name, rnn="LSTM")(inputs(3)).shape == (3,)


# ------------------------------------------------------- what a score may depend on
@pytest.mark.parametrize("name", NAMES)
def test_permuting_the_days_stocks_permutes_the_scores(name):
    model = make(name)
    x = inputs(7)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(x[perm]), model(x)[perm], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_which_stocks_a_score_reads(name):
    """Changing stock 3's window: per-stock models leave every other score exactly as it
    was; GAT's attention over the day's stocks moves all of them."""
    model = make(name)
    x = inputs(7)
    x2 = x.clone()
    x2[3] = inputs(1, seed=4)[0]
    with torch.no_grad():
        before, after = model(x), model(x2)
    others = [0, 1, 2, 4, 5, 6]
    assert before[3] != after[3]
    if name == "gat":
        assert ((before - after)[others].abs() > 1e-6).all()
    else:
        assert torch.equal(before[others], after[others])


@pytest.fixture(scope="module")
def market(synthetic_dir):
    return load_market(synthetic_dir)


LAST_SEEN = 3  # the test day s after which the market is scrambled


@pytest.fixture(scope="module")
def scrambled(market, scramble):
    """Day batches of the synthetic test split, and the same from a market whose values
    after test day s are scrambled (the approach of test_run.py's look-ahead test)."""
    cfg = DataConfig.make(universe="csi300", **split())
    ds = build(prepare(market, cfg), cfg)
    s = int(ds.splits["test"].days[LAST_SEEN])
    other = build(prepare(scramble(market, s), cfg), cfg)
    cpu = torch.device("cpu")
    return DeviceData(ds, cpu), DeviceData(other, cpu)


@pytest.mark.parametrize("name", NAMES)
def test_predictions_up_to_day_s_ignore_data_after_s(name, scrambled):
    model = make(name)
    a, b = scrambled
    changed = []
    with torch.no_grad():
        for k in range(LAST_SEEN + 4):
            mu_a, mu_b = model.predict(a.batch("test", k)[0])[0], model.predict(b.batch("test", k)[0])[0]
            if k <= LAST_SEEN:
                assert torch.equal(mu_a, mu_b), f"test day {k} <= s changed"
            else:
                changed.append(not torch.equal(mu_a, mu_b))
    assert all(changed)  # the scrambling reaches the days after s


# ----------------------------------------------------------------- SFM against numpy
def hard_sigmoid(z):
    return np.clip(z / 6 + 0.5, 0.0, 1.0)  # PyTorch's Hardsigmoid, which Qlib uses


def np_sfm(x: np.ndarray, m: B.SFM, sigmoid=hard_sigmoid, k0: int = 0) -> np.ndarray:
    """Qlib's SFM_Model.forward, step by step, from the module's weights; frequencies
    (k0 + k) / K for k = 0..K-1."""
    w = {k: npw(v) for k, v in m.named_parameters()}
    n, n_steps, _ = x.shape
    H, K = m.cfg.H, m.cfg.freq_dim
    freq = (k0 + np.arange(K)) / K
    h, S_re, S_im = np.zeros((n, H)), np.zeros((n, H, K)), np.zeros((n, H, K))
    for step in range(n_steps):
        def gate(g):
            return x[:, step] @ w[f"W_{g}"] + h @ w[f"U_{g}"] + w[f"b_{g}"]

        i, ste, fre, o = (sigmoid(gate(g)) for g in ("i", "ste", "fre", "o"))
        c = i * np.tanh(gate("c"))
        f = ste[:, :, None] * fre[:, None, :]
        omega = 2 * np.pi * (step + 1) * freq  # t = 1..T
        S_re = f * S_re + c[:, :, None] * np.cos(omega)
        S_im = f * S_im + c[:, :, None] * np.sin(omega)
        A = S_re ** 2 + S_im ** 2
        h = o * np.tanh((A @ w["U_a"])[:, :, 0] + w["b_a"])
    p = h @ w["W_p"] + w["b_p"]
    return (p @ w["fc_out.weight"].T + w["fc_out.bias"])[:, 0]


@pytest.fixture
def sfm_case():
    model = make("sfm", C=4, H=6, freq_dim=5, output_dim=3).double()
    with torch.no_grad():  # every weight random: zero or unit initial biases hide nothing
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model, np.random.default_rng(5).normal(size=(8, 3, 4))


@pytest.mark.parametrize("n_steps", (1, 3))
def test_sfm_recurrence_matches_numpy(sfm_case, n_steps):
    model, x = sfm_case
    x = x[:, :n_steps]
    got = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, np_sfm(x, model), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("wrong", ["frequencies (k + 1) / K", "Keras hard sigmoid"])
def test_sfm_check_tells_wrong_recurrences_apart(sfm_case, wrong):
    """(Shifting the time origin is no such variant: it turns S by a phase that the
    amplitude A = |S|^2 does not see.)"""
    model, x = sfm_case
    got = model(torch.from_numpy(x)).detach().numpy()
    variant = np_sfm(x, model, k0=1) if wrong.startswith("freq") else \
        np_sfm(x, model, sigmoid=lambda z: np.clip(0.2 * z + 0.5, 0.0, 1.0))
    assert not np.allclose(got, variant, rtol=1e-6, atol=1e-8)


# ------------------------------------------- Transformer: last position only
def full_encoder_score(m: B.Transformer, x: torch.Tensor) -> torch.Tensor:
    """Qlib's computation: every layer at every position, then v_T."""
    return m.decoder_layer(m.encoder(m.pos_encoder(m.feature_layer(x)))[:, -1])[:, 0]


@pytest.mark.parametrize("layers", (1, 2, 3))
@pytest.mark.parametrize("dropout", (0.0, 0.3))
def test_transformer_last_position_equals_the_full_encoder(layers, dropout):
    """The final layer computed for position T alone gives Qlib's score and gradients,
    in training mode too (with dropout only in evaluation mode: the shortcut draws
    fewer dropout masks, so the draws differ)."""
    model = make("trans", d_model=16, d_ff=64, layers=layers, dropout=dropout).double()
    x = inputs(9, t=6, c=20).double()
    assert model.encoder.norm is None  # as Qlib: no norm after the stack
    for mode in (False, True) if dropout == 0 else (False,):
        model.train(mode)
        outs, grads = [], []
        for f in (model, lambda x: full_encoder_score(model, x)):
            model.zero_grad()
            y = f(x)
            y.square().sum().backward()
            outs.append(y.detach())
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-11)
    model.eval()  # a wrong shortcut (first position's output) is told apart
    wrong = model.decoder_layer(model.encoder(model.pos_encoder(model.feature_layer(x)))[:, 0])[:, 0]
    assert not torch.allclose(model(x), wrong, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------ GAT against numpy
def np_gat_head(h: np.ndarray, m: B.GAT, qlib_order: bool = True) -> np.ndarray:
    """GATModel after its RNN, with Qlib's explicit pair tensor: row (i, j) of
    ``cal_attention``'s input is [W h_j ; W h_i]."""
    slope = m.cfg.leaky_slope
    wh = h @ npw(m.transformation.weight).T + npw(m.transformation.bias)
    n = len(h)
    pairs = np.empty((n, n, 2 * wh.shape[1]))
    for i in range(n):
        for j in range(n):
            pairs[i, j] = np.concatenate([wh[j], wh[i]] if qlib_order else [wh[i], wh[j]])
    e = pairs @ npw(m.a)
    e = np.where(e >= 0, e, slope * e)
    att = np.exp(e - e.max(axis=1, keepdims=True))
    att /= att.sum(axis=1, keepdims=True)
    z = att @ h + h
    z = z @ npw(m.fc.weight).T + npw(m.fc.bias)
    z = np.where(z >= 0, z, slope * z)
    return (z @ npw(m.fc_out.weight).T + npw(m.fc_out.bias))[:, 0]


def test_gat_attention_matches_qlibs_pair_concatenation():
    model = make("gat", C=4, H=6).double()
    x = torch.from_numpy(np.random.default_rng(6).normal(size=(5, 3, 4)))
    h = model.rnn(x)[0][:, -1].detach().numpy()
    got = model(x).detach().numpy()
    np.testing.assert_allclose(got, np_gat_head(h, model), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.attention(torch.from_numpy(h)).sum(1).detach().numpy(), 1.0)
    assert not np.allclose(got, np_gat_head(h, model, qlib_order=False), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------- through the runner
# Qlib's architectures. Learning rates: Qlib's are too small for four models to learn
# much in two epochs of 80 days, so those get larger ones (1e-3; SFM 3e-3); the
# Transformer's feed-forward is cut from 2048 to 256 to keep its run to seconds on one
# CPU thread. (With Qlib's settings on the whole synthetic split, two epochs reached
# test Rank ICs from 0.026 (SFM) to 0.067 (GRU); too slow for a test.)
SMOKE = {"gru": ({}, {"lr": 1e-3}), "alstm": ({}, {}), "trans": ({"d_ff": 256}, {"lr": 1e-3}),
         "sfm": ({}, {"lr": 3e-3}), "gat": ({}, {"lr": 1e-3})}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One dataset cache for the module's runs: the dataset is built once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPLICATION_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def smoke_split() -> dict:
    """The synthetic market's split, shortened to keep the five runs to about a minute
    on one thread: the last 80 training days, 40 validation days, 120 test days."""
    cal = [str(d) for d in calendar()]
    return {"train": (cal[280], cal[359]), "valid": (cal[360], cal[399]),
            "test": (cal[400], cal[519])}


@pytest.mark.parametrize("name", NAMES)
def test_short_run_through_the_runner_beats_random_ranking(name, market, cache, tmp_path,
                                                           monkeypatch):
    decays = []
    adam = torch.optim.Adam

    def recording_adam(params, **kwargs):
        decays.append(kwargs.get("weight_decay", 0.0))
        return adam(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", recording_adam)
    model_cfg, train_cfg = SMOKE[name]
    cfg = R.run_config(name, 0, DataConfig.make(universe="csi300", **smoke_split()), model_cfg,
                       {"max_epochs": 2, "patience": 2, **train_cfg})
    r = R.execute(cfg, device="cpu", progress=False, market=market, out=tmp_path / "runs",
                  results=tmp_path / "results")
    assert decays == [1e-3 if name == "trans" else 0.0]  # Qlib's reg reaches Adam
    assert r["epochs_trained"] == 2 and r["test"]["days"] == 120
    preds = np.load(tmp_path / "results" / f"{r['run_id']}.npz")
    assert np.isnan(preds["sigma"]).all() and np.isfinite(preds["mu"]).all()
    assert r["test"]["rank_ic"] > 0, r["test"]
