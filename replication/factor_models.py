r"""Table 1's "dynamic factor model" baselines: CA (Gu, Kelly & Xiu 2021) and Linear.

Both are conditional (dynamic) latent factor models of one trading day's returns,

    r_t = beta(z_{t-1}) f_t + u_t,

with exposures ``beta`` that are a function of the stocks' characteristics ``z`` and
latent factors ``f_t`` that are extracted from the day's returns themselves (the
autoencoder's "encoder"). They differ in ``beta`` and in how ``f_t`` is formed:

* **CA**, the conditional autoencoder of Gu, Kelly & Xiu (GKX, J. Econometrics 2021):
  beta network = a feed-forward network (CA0 linear, CA1-CA3 with 1-3 hidden ReLU
  layers and batch norm); factor network = one linear layer on the C managed
  portfolios x_t = (Z^T Z)^{-1} Z^T r_t (Z: the ranked characteristics below).
* **Linear**, the paper's "linear dynamic factor model", here IPCA, the linear model
  of Kelly, Pruitt & Su (KPS, "Characteristics are covariances", JFE 2019): beta = Z
  Gamma (linear, as CA0) but f_t = the cross-sectional OLS of r_t on beta, i.e. the
  factors that fit the day best given beta. See :class:`Linear` for why.

Out of sample neither model sees r: the prediction for day s is E_s[r] = beta(z_s)
lambda with lambda = the mean of the factors f_t over the training days (GKX
and KPS: the factors' sample mean as their risk premium).

Symbols (paper -> name here -> shape), for one trading day with N stocks:

====================================  ==============  =================
window of normalised features         ``x``           (N, T, C)
z_{i,t-1}, ranked characteristics     ``z``           (N, C)
r_t, returns (the training label)     ``y``           (N,)
x_t, managed portfolios (GKX)         ``x_port``      (C,)
beta(z), factor exposures             ``beta``        (N, K)
f_t, factors                          ``f``           (K,)
lambda, mean of the training f_t      ``lam``         (K,)
====================================  ==============  =================

Characteristics, not sequences: GKX's and KPS's models read one vector of
characteristics per stock. Ours are the stock's 20 normalised Alpha158 features on
the **last** day s of its window, ``x[:, -1, :]``; the other T - 1 days are not used.
The label is the return from s+1 to s+2, so z is known when r is realised, the
z_{t-1} -> r_t timing of GKX.

Ranked, as GKX and KPS do (:func:`characteristics`): each feature is ranked across
the day's stocks and the ranks are mapped linearly into [-1, 1] (average ranks for
ties, which the clipping at +-3 and the zero fill make common). Why: the features
are robust-z-scored with statistics pooled over the whole training period, not per
day, so their cross-sectional means and spreads shift strongly from day to day.
Batch norm normalises with the day's statistics in training but with running
statistics in evaluation, and that shift makes the two disagree; ranked, every
column of z has mean exactly 0 and, up to ties and a factor (N + 1) / (N - 1), the
same spread on every day. The cost: a stock's z, hence its prediction, depends on
the day's other stocks, but only through its ranks among them. The managed
portfolios use the ranked Z, as GKX's.

Interface (``replication.run.ModelSpec``): ``loss(x, y)`` -> (loss, mse, 0): the
"nll" slot holds the mean squared error (GKX's loss; these models have no likelihood)
and the "kl" slot is 0. ``predict(x)`` -> (beta(z) lambda, NaN): no risk estimate;
x is the whole day's (N, T, C), since the ranks need the cross-section.
``after_epoch(data)`` recomputes lambda with the current weights after each epoch's
training steps, so validation, early stopping and the restored best state dict (lambda
is a registered buffer) all use the lambda of the weights they belong to.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from replication.config import Overridable

HIDDEN = {"ca0": (), "ca1": (32,), "ca2": (32, 16), "ca3": (32, 16, 8)}  # GKX's CA0-CA3


@dataclass(frozen=True)
class CAConfig(Overridable):
    """CA hyper-parameters. The paper gives none; GKX's values where they have one.

    The depth is chosen on validation by one run per variant, e.g.
    ``run_config("ca", 0, data, {"variant": "ca0"})`` ... ``{"variant": "ca3"}``.
    """

    C: int = 20  # paper: the 20 Alpha158 features (GKX: 94 firm characteristics)
    K: int = 6  # factors; paper silent; GKX report K = 1..6: we take the largest (can be set per run)
    variant: str = "ca2"  # a default only: CA0-CA3 are chosen on validation (separate runs)
    l1: float = 1e-4  # L1 weight penalty; paper silent; the middle (log scale) of GKX's range 1e-5..1e-3

    def __post_init__(self) -> None:
        if self.variant not in HIDDEN:
            raise ValueError(f"unknown CA variant {self.variant!r}; known: {tuple(HIDDEN)}")


@dataclass(frozen=True)
class LinearConfig(Overridable):
    """Linear (IPCA) hyper-parameters. The paper gives none."""

    C: int = 20  # paper: the 20 Alpha158 features
    K: int = 6  # factors; paper silent; KPS and GKX use K = 1..6: the largest, as CA's default


def characteristics(x: torch.Tensor) -> torch.Tensor:
    r"""z: the window's last day's features, ranked across the day's stocks into [-1, 1].

    GKX's (and KPS's) characteristic transform: per feature c, z_ic = 2 (rank_ic - 1) /
    (N - 1) - 1, with rank_ic in 1..N the rank of x_ic among the N stocks' values and
    tied values sharing their average rank (``scipy.stats.rankdata(method="average")``);
    a one-stock day gives z = 0. Average ranks sum to N (N + 1) / 2, so every column of
    z has mean exactly 0 on every day. Computed as rank = #less + (#equal + 1) / 2,
    both counts by binary search in the sorted column: O(N log N) per feature.
    NaN is not expected (``Fillna`` has filled the features) and would get a
    meaningless rank. Not differentiable (nothing upstream of x is trained).
    (N, T, C) -> (N, C), in x's dtype.
    """
    n = x.shape[0]
    if n == 1:
        return torch.zeros_like(x[:, -1, :])
    v = x[:, -1, :].T.contiguous()  # (N, C) -> (C, N): one sorted row per feature
    srt = v.sort(dim=1).values  # (C, N)
    less = torch.searchsorted(srt, v)  # (C, N): #values < v
    less_eq = torch.searchsorted(srt, v, right=True)  # (C, N): #values <= v
    # 2 (rank - 1) / (N - 1) - 1 with rank = less + (less_eq - less + 1) / 2
    z = (less + less_eq - 1).to(x.dtype) / (n - 1) - 1  # (C, N)
    return z.T  # (C, N) -> (N, C)


def least_squares(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(a^T a + rho I)^{-1} a^T b: the OLS coefficients of b (N,) on the columns of a (N, P).

    Solved in float64 (a^T a is ill-conditioned in float32 when N ~ P), as
    FactorVAE-port's portfolios in ``replication.model``, with the same ridge
    rho = 1e-6 * mean(diag(a^T a)) (+ 1e-30, so an all-zero ``a`` gives 0, not NaN).
    With N < P, a^T a is singular: the ridge solution is then, to ~1e-6, the
    minimum-norm least-squares solution (pinv(a) b), finite. Differentiable in ``a``.
    Returns (P,) in ``a``'s dtype.
    """
    a64, b64 = a.double(), b.double()
    ata = a64.T @ a64  # (P, P)
    rho = 1e-6 * ata.diagonal().mean() + 1e-30
    eye = torch.eye(len(ata), device=a.device, dtype=ata.dtype)
    return torch.linalg.solve(ata + rho * eye, a64.T @ b64).to(a.dtype)  # (P,)


class CrossSectionBatchNorm(nn.BatchNorm1d):
    """Batch norm over the stocks of one day (GKX's batch normalisation; a batch here is
    a day's cross-section, not GKX's 10,000 random stock-months).

    Training: each hidden unit is normalised by the day's mean and (biased) variance
    over its stocks, and the running statistics (momentum 0.1, PyTorch's default: in
    effect the last ~10 shuffled training days) are updated. Evaluation (``predict``,
    ``after_epoch``): the running statistics, so the layer treats each stock on its
    own and a stock's prediction depends on the other stocks only through the ranks
    in z. The two modes agree when a day's statistics are near the running ones; the
    ranked z makes them so for the first layer, whose pre-activations W z + b have
    mean exactly b on every day (z's columns have mean 0) and a spread that changes
    only with the characteristics' cross-sectional correlations. A one-stock day has
    no variance to normalise by: in training it is normalised with the running
    statistics and leaves them unchanged.
    """

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.training and h.shape[0] < 2:
            return F.batch_norm(h, self.running_mean, self.running_var, self.weight, self.bias,
                                training=False, eps=self.eps)
        return super().forward(h)


class BetaNetwork(nn.Module):
    """GKX's beta network: z (N, C) -> beta (N, K).

    Hidden layer l: z^(l) = ReLU(BN(W^(l) z^(l-1) + b^(l))) (batch norm before the
    non-linearity, Ioffe & Szegedy's placement); output: beta = W z^(L) + b.
    CA0 has no hidden layer (beta linear in z); CA1 32; CA2 32-16; CA3 32-16-8 units.
    """

    def __init__(self, C: int, K: int, hidden: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        for n_in, n_out in zip((C,) + hidden, hidden):
            layers += [nn.Linear(n_in, n_out), CrossSectionBatchNorm(n_out), nn.ReLU()]
        layers.append(nn.Linear(((C,) + hidden)[-1], K))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (N, C) -> (N, K)


def managed_portfolios(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """GKX's factor-network input x_t = (Z^T Z)^{-1} Z^T r_t: the returns of the C
    characteristic-managed portfolios, (N, C), (N,) -> (C,). See :func:`least_squares`
    for the float64 solve and the ridge (it keeps days with N < C finite)."""
    return least_squares(z, y)


class FactorNetwork(nn.Module):
    """GKX's factor network: one linear layer, f_t = W x_t + b, (C,) -> (K,)."""

    def __init__(self, C: int, K: int):
        super().__init__()
        self.map = nn.Linear(C, K)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.map(managed_portfolios(z, y))  # (C,) -> (K,)


class ConditionalFactorModel(nn.Module):
    """r_t = beta(z) f_t + u_t, trained on the MSE; predicts beta(z) lambda.

    Subclasses define ``exposures(z)`` -> beta (N, K), ``factors(z, beta, y)`` -> f_t
    (K,), and optionally ``penalty()``.
    """

    def __init__(self, K: int):
        super().__init__()
        # lambda: a buffer, so it is saved (and restored with the best epoch) with the weights
        self.register_buffer("lam", torch.zeros(K))

    def exposures(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def factors(self, z: torch.Tensor, beta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self) -> torch.Tensor:
        return torch.zeros((), device=self.lam.device, dtype=self.lam.dtype)

    def loss(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
        """mean_i (r_i - beta_i f_t)^2 + penalty for one day; (loss, mse, 0) as 0-d tensors.

        ``generator`` is unused (the models are deterministic); it is the shared interface.
        """
        z = characteristics(x)
        beta = self.exposures(z)  # (N, K)
        f = self.factors(z, beta, y)  # (K,)
        mse = ((y - beta @ f) ** 2).mean()
        return mse + self.penalty(), mse, torch.zeros((), device=x.device)

    def predict(self, x: torch.Tensor):
        """(beta(z) lambda, NaN), each (N,), from the day's x (N, T, C) only: no returns,
        no look-ahead. Each stock's z ranks it among the day's N stocks."""
        mu = self.exposures(characteristics(x)) @ self.lam  # (N, K) @ (K,) -> (N,)
        return mu, torch.full_like(mu, float("nan"))

    @torch.no_grad()
    def after_epoch(self, data) -> None:
        """lambda = (1/D) sum_t f_t over the D training days, with the current weights,
        in evaluation mode (batch norm on its running statistics, which it leaves as
        they are). ``data``: a ``replication.train.DeviceData``."""
        was_training = self.training
        self.eval()
        n_days = len(data.splits["train"]["days"])
        total = torch.zeros(self.lam.shape, device=self.lam.device, dtype=torch.float64)
        for k in range(n_days):
            x, y = data.batch("train", k)
            z = characteristics(x)
            total += self.factors(z, self.exposures(z), y).double()
        self.lam.copy_(total / n_days)
        self.train(was_training)


class CA(ConditionalFactorModel):
    r"""GKX's conditional autoencoder CA0-CA3 (``cfg.variant``).

    beta = BetaNetwork(z) (N, K); f_t = W x_t + b with x_t = (Z^T Z)^{-1} Z^T r_t (K,);
    loss = mean_i (r_i - beta_i f_t)^2 + l1 * sum |W| over the weight matrices of both
    networks (biases and batch-norm scales unpenalised).

    Characteristics as GKX: ranked cross-sectionally into [-1, 1] (:func:`characteristics`;
    why: the module docstring).

    Deviations from GKX (all forced by the paper's setting or left open by both papers):
    characteristics are the 20 Alpha158 features of the day (GKX: 94 firm
    characteristics), with no constant added to Z (z's columns have mean 0 each day,
    so the managed portfolios are long-short, as GKX's); the target is the
    cross-sectionally rank-normalised next-day return (GKX: monthly excess returns);
    one day per batch (GKX: 10,000 random stock-months); early stopping on validation
    Rank IC, the repository's rule for every model (GKX: the validation objective); one
    network per seed (GKX average an ensemble of networks); the model is fitted once and
    lambda is the mean over the training days (GKX refit yearly and average the factors
    up to t - 1).
    """

    def __init__(self, cfg: CAConfig = CAConfig()):
        super().__init__(cfg.K)
        self.cfg = cfg
        self.beta = BetaNetwork(cfg.C, cfg.K, HIDDEN[cfg.variant])
        self.factor = FactorNetwork(cfg.C, cfg.K)

    def exposures(self, z: torch.Tensor) -> torch.Tensor:
        return self.beta(z)

    def factors(self, z: torch.Tensor, beta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.factor(z, y)  # GKX: f_t does not depend on beta

    def penalty(self) -> torch.Tensor:
        weights = [m.weight for m in self.modules() if isinstance(m, nn.Linear)]
        return self.cfg.l1 * sum(w.abs().sum() for w in weights)


class Linear(ConditionalFactorModel):
    r"""The paper's "Linear": IPCA (Kelly, Pruitt & Su 2019), restricted (no alpha).

    beta = z Gamma + gamma_0, (N, K): linear in the characteristics (gamma_0 = KPS's
    constant characteristic); f_t = (beta^T beta)^{-1} beta^T r_t, (K,): the day's
    cross-sectional OLS factors given beta (float64, ridge: :func:`least_squares`).
    Loss: mean_i (r_i - beta_i f_t)^2, i.e. the residual of projecting r_t on beta's
    columns -- KPS's objective with f_t concentrated out; no penalty (KPS have none).

    Why IPCA: the paper says only "a linear dynamic factor model", and files it with CA
    under "Dynamic factor model". Its related work names exactly two such models,
    IPCA (linear exposures) and CA (non-linear), and says CA beats "other leading
    linear methods" -- GKX's linear benchmark is IPCA. IPCA is also what CA becomes
    when beta is linear and the factors are left free instead of being a learned map
    of the managed portfolios, so the Linear vs CA rows separate the two.

    This is **not** CA0: CA0 has the same linear beta but f_t = W x_t + b, a linear
    map of the managed portfolios learned jointly (and an L1 penalty); here f_t is the
    best cross-sectional fit given beta, with no factor weights to learn. The two rows
    of the table are different models (registry names "linear" and "ca" with
    ``variant="ca0"``).

    Characteristics as for CA: ranked cross-sectionally into [-1, 1]. KPS rank into
    [-0.5, 0.5], i.e. z / 2: a linear rescaling that the linear beta absorbs (z Gamma
    = (z / 2)(2 Gamma), gamma_0 unchanged), so the set of models, the objective's
    minimum and beta lambda are the same (only Adam's path sees the scale).

    Deviations from KPS: 20 features, not KPS's 36 characteristics; Gamma fitted by
    Adam on the concentrated objective with early stopping on validation Rank IC
    instead of alternating least squares to convergence (same objective; beta lambda does not depend on Gamma's
    rotation, so KPS's identification constraints are not needed); fitted once, lambda
    = mean over the training days (KPS: recursive).
    """

    def __init__(self, cfg: LinearConfig = LinearConfig()):
        super().__init__(cfg.K)
        self.cfg = cfg
        self.gamma = nn.Linear(cfg.C, cfg.K)  # Gamma (C, K) and gamma_0 (the bias)

    def exposures(self, z: torch.Tensor) -> torch.Tensor:
        return self.gamma(z)  # (N, C) -> (N, K)

    def factors(self, z: torch.Tensor, beta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return least_squares(beta, y)  # (K,), differentiable in beta


# name -> (config class, model class, TrainConfig defaults); replication.run registers them.
# lr 1e-3: the paper gives no optimisation settings for its baselines; 1e-3 is the low
# end of GKX's learning-rate range 1e-3..1e-2 (a day is a far smaller batch than GKX's
# 10,000 stock-months). Everything else is TrainConfig's (Adam, clipping, early stopping).
MODELS = {
    "ca": (CAConfig, CA, {"lr": 1e-3}),
    "linear": (LinearConfig, Linear, {"lr": 1e-3}),
}
