r"""FactorVAE (Duan et al., AAAI 2022), equations (4)-(19), one module per paper component.

Symbols (paper -> name here -> shape), for one trading day with N stocks:

================================  ==================  =================
x, stock characteristics          ``x``               (N, T, C)
e, latent features (eq. 4)        ``e``               (N, H)
a_p, portfolio weights (eq. 6)    ``a_p``             (N, M)
y_p, portfolio returns (eq. 7)    ``y_p``             (M,)
mu_post, sigma_post (eq. 8)       ``mu_post`` ...     (K,)
mu_alpha, sigma_alpha (eq. 10)    ``mu_alpha`` ...    (N,)
beta, factor exposures (eq. 11)   ``beta``            (N, K)
mu_y, sigma_y (eq. 12)            ``mu_y``, ...       (N,)
a_att, attention (eq. 14)         ``a_att``           (K, N)
h_multi (eq. 15)                  ``h_multi``         (K, H)
mu_prior, sigma_prior (eq. 16)    ``mu_prior`` ...    (K,)
mu_pred, sigma_pred (eqs. 18-19)  ``mu_pred`` ...     (N,)
================================  ==================  =================

The encoder (eqs. 5-8) reads the day's returns ``y``: it is used by the training loss
only. :meth:`FactorVAE.predict` runs the feature extractor, the predictor and the
decoder (eqs. 18-19) and has no path to the encoder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from replication.config import Overridable

VARIANTS = ("factorvae", "factorvae-prior", "factorvae-port")


@dataclass(frozen=True)
class ModelConfig(Overridable):
    """FactorVAE hyper-parameters. The paper fixes T and C; the rest it leaves open."""

    C: int = 20  # paper: the 20 Alpha158 features Qlib selects for time-series models
    H: int = 64  # hidden size; paper silent (Qlib's benchmark models use 64)
    K: int = 32  # number of factors; paper silent
    M: int = 64  # number of portfolios; paper silent
    gamma: float = 1.0  # KL weight of eq. (17); paper silent; runs use 0.1, chosen on validation (run.KL_DEFAULTS)
    leaky_slope: float = 0.1  # zeta of LeakyReLU; paper silent
    recon: str = "analytic"  # eq. (17) reconstruction: "analytic" (eq. 12) or "sample"; chosen on validation
    variant: str = "factorvae"  # or "factorvae-prior" / "factorvae-port" (Tables 1 and 2)

    def __post_init__(self) -> None:
        if self.recon not in ("analytic", "sample"):
            raise ValueError(f"recon must be 'analytic' or 'sample', got {self.recon!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown model variant {self.variant!r}; known: {VARIANTS}")


class FeatureExtractor(nn.Module):
    """Eq. (4): h_proj = LeakyReLU(w_proj x + b_proj); h_gru = GRU(h_proj); e = h_gru at T.

    (N, T, C) -> (N, H)
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.C, cfg.H)
        self.act = nn.LeakyReLU(cfg.leaky_slope)
        self.gru = nn.GRU(cfg.H, cfg.H, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_proj = self.act(self.proj(x))  # (N, T, C) -> (N, T, H)
        _, h_last = self.gru(h_proj)  # (1, N, H): hidden state at the last step T
        return h_last[0]  # e: (N, H)


class FactorEncoder(nn.Module):
    """Eqs. (5)-(8): posterior factors from the day's returns ``y`` and features ``e``.

    a_p = softmax over the N stocks of (w_p e + b_p)         (eq. 6), (N, M)
    y_p = sum_i y_i a_p[i]                                   (eq. 7), (M,)
    mu_post = w y_p + b;  sigma_post = Softplus(w' y_p + b')  (eq. 8), (K,)

    ``port=True`` is FactorVAE-port (Table 2): y_p = (e^T e)^{-1} e^T y, (H,), the
    managed portfolios of CA; a ridge of 1e-6 * mean(diag(e^T e)) keeps the solve
    defined if e^T e is singular (fewer stocks than H, say), and it runs in float64.
    """

    def __init__(self, cfg: ModelConfig, port: bool = False):
        super().__init__()
        self.port = port
        n_port = cfg.H if port else cfg.M
        if not port:
            self.portfolio = nn.Linear(cfg.H, cfg.M)
        self.map_mu = nn.Linear(n_port, cfg.K)
        self.map_sigma = nn.Linear(n_port, cfg.K)

    def portfolio_returns(self, y: torch.Tensor, e: torch.Tensor,
                          mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.port:  # padded rows have e = 0 and y = 0: they add nothing to e^T e, e^T y  # solved in float64: e^T e is ill-conditioned in float32 when N ~ H
            e64, y64 = e.double(), y.double()
            ete = e64.T @ e64  # (H, H)
            ridge = 1e-6 * ete.diagonal().mean() * torch.eye(len(ete), device=e.device,
                                                             dtype=ete.dtype)
            return torch.linalg.solve(ete + ridge, e64.T @ y64).to(e.dtype)  # (H,)
        logits = self.portfolio(e)  # (N, M)
        if mask is not None:  # padded rows get weight 0
            logits = logits.masked_fill(~mask[:, None], float("-inf"))
        a_p = torch.softmax(logits, dim=0)  # (N, M), softmax over stocks (eq. 6)
        return y @ a_p  # (N,) @ (N, M) -> (M,)  (eq. 7)

    def forward(self, y: torch.Tensor, e: torch.Tensor, mask: torch.Tensor | None = None):
        y_p = self.portfolio_returns(y, e, mask)
        return self.map_mu(y_p), F.softplus(self.map_sigma(y_p))  # (K,), (K,)


class FactorDecoder(nn.Module):
    """Eqs. (9)-(12): returns from factors z ~ N(mu_z, sigma_z^2) and features ``e``.

    alpha layer (eq. 10): h = LeakyReLU(w e + b); mu_alpha = w h + b;
                          sigma_alpha = Softplus(w' h + b'), each (N,)
    beta layer (eq. 11):  beta = w_beta e + b_beta, (N, K)
    output (eq. 12):      mu_y = mu_alpha + beta mu_z;
                          sigma_y = sqrt(sigma_alpha^2 + sum_k beta_k^2 sigma_z,k^2)
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.alpha_hidden = nn.Linear(cfg.H, cfg.H)
        self.act = nn.LeakyReLU(cfg.leaky_slope)
        self.alpha_mu = nn.Linear(cfg.H, 1)
        self.alpha_sigma = nn.Linear(cfg.H, 1)
        self.beta = nn.Linear(cfg.H, cfg.K)

    def alpha_beta(self, e: torch.Tensor):
        h_alpha = self.act(self.alpha_hidden(e))  # (N, H)
        mu_alpha = self.alpha_mu(h_alpha)[:, 0]  # (N,)
        sigma_alpha = F.softplus(self.alpha_sigma(h_alpha))[:, 0]  # (N,)
        return mu_alpha, sigma_alpha, self.beta(e)  # beta: (N, K)

    def forward(self, e: torch.Tensor, mu_z: torch.Tensor, sigma_z: torch.Tensor):
        mu_alpha, sigma_alpha, beta = self.alpha_beta(e)
        mu_y = mu_alpha + beta @ mu_z  # (N,)
        sigma_y = torch.sqrt(sigma_alpha ** 2 + (beta ** 2) @ (sigma_z ** 2))  # (N,)
        return mu_y, sigma_y


class FactorPredictor(nn.Module):
    """Eqs. (13)-(16): prior factors from the features ``e`` alone.

    Head k (eq. 14): k_i = W_key e_i, v_i = W_value e_i, with its own learnable query q;
    a_att,i = ReLU(cos(q, k_i)) / sum_j ReLU(cos(q, k_j)); h_att = sum_i a_att,i v_i.
    If every cosine is <= 0 the sum is 0: the weights are then all 0 (h_att = 0)
    instead of 0/0 -- the denominator is clamped at 1e-12.
    Eq. (15): h_multi = the K heads stacked, (K, H).
    Eq. (16): distribution network as eq. (10), applied to each head's row:
    h = LeakyReLU(w h_multi + b); mu_prior = w h + b; sigma_prior = Softplus(w' h + b').
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.query = nn.Parameter(torch.empty(cfg.K, cfg.H))  # one q per head
        self.key = nn.Parameter(torch.empty(cfg.K, cfg.H, cfg.H))  # W_key per head, no bias (eq. 14)
        self.value = nn.Parameter(torch.empty(cfg.K, cfg.H, cfg.H))
        bound = 1 / math.sqrt(cfg.H)  # nn.Linear's default initialisation
        for p in (self.query, self.key, self.value):
            nn.init.uniform_(p, -bound, bound)
        self.hidden = nn.Linear(cfg.H, cfg.H)
        self.act = nn.LeakyReLU(cfg.leaky_slope)
        self.mu = nn.Linear(cfg.H, 1)
        self.sigma = nn.Linear(cfg.H, 1)

    def attention(self, e: torch.Tensor) -> torch.Tensor:
        """a_att: (K, N), each row sums to 1 (or is all 0)."""
        n, h = e.shape
        keys = (e @ self.key.permute(2, 0, 1).reshape(h, -1)).view(n, len(self.key), h)  # (N, K, H)
        # q_k . (W_k e_i) = (W_k^T q_k) . e_i: one (N, H) @ (H, K) product
        qk = e @ torch.einsum("khd,kh->dk", self.key, self.query)  # (N, K)
        cos = qk / (keys.norm(dim=-1) * self.query.norm(dim=-1)).clamp_min(1e-12)  # (N, K)
        score = F.relu(cos).T  # (K, N)
        return score / score.sum(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, e: torch.Tensor):
        # h_att,k = sum_i a_ik W_value,k e_i = W_value,k (sum_i a_ik e_i): no (K, N, H) values
        pooled = self.attention(e) @ e  # (K, N) @ (N, H) -> (K, H)
        h_multi = torch.einsum("khd,kd->kh", self.value, pooled)  # (K, H), eq. (15)
        h = self.act(self.hidden(h_multi))  # (K, H)
        return self.mu(h)[:, 0], F.softplus(self.sigma(h))[:, 0]  # (K,), (K,)


def gaussian_nll(y: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over stocks (the ``mask``ed ones) of -log N(y; mu, sigma^2)."""
    terms = torch.log(sigma) + 0.5 * ((y - mu) / sigma) ** 2
    mean = terms.mean() if mask is None else (terms * mask).sum() / mask.sum()
    return mean + 0.5 * math.log(2 * math.pi)


def gaussian_kl(mu_q, sigma_q, mu_p, sigma_p, reduce: bool = True) -> torch.Tensor:
    """KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)), summed over independent factors
    (``reduce=False``: one term per factor)."""
    kl = (torch.log(sigma_p / sigma_q)
          + (sigma_q ** 2 + (mu_q - mu_p) ** 2) / (2 * sigma_p ** 2) - 0.5)
    return kl.sum() if reduce else kl


class FactorVAE(nn.Module):
    """The model of the paper and its two ablations (``cfg.variant``)."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        self.feature = FeatureExtractor(cfg)
        self.encoder = None if cfg.variant == "factorvae-prior" else \
            FactorEncoder(cfg, port=cfg.variant == "factorvae-port")
        self.decoder = FactorDecoder(cfg)
        self.predictor = FactorPredictor(cfg)

    def features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """e of eq. (4), (N, H). ``mask`` (N,) bool marks the real stocks of a day padded
        to a fixed size (static shapes for the GPU): padded rows get e = 0, so they
        add nothing to the attention of eq. (14) (cosine 0) nor to FactorVAE-port's
        (e^T e)^{-1} e^T y; the encoder's softmax and the loss mask them explicitly."""
        e = self.feature(x)
        return e if mask is None else e * mask[:, None]

    def predict(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        """Eqs. (18)-(19): (mu_pred, sigma_pred), each (N,), from x (N, T, C) only."""
        e = self.features(x, mask)
        mu_prior, sigma_prior = self.predictor(e)
        return self.decoder(e, mu_prior, sigma_prior)

    def factor_kl(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """KL(posterior || prior) of each factor for one day, (K,): a diagnostic of
        posterior collapse (factors whose KL stays ~0 carry no information). Reads the
        day's returns y, like the loss; prediction never uses it."""
        e = self.features(x, mask)
        mu_post, sigma_post = self.encoder(y, e, mask)
        return gaussian_kl(mu_post, sigma_post, *self.predictor(e), reduce=False)

    def loss(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None,
             mask: torch.Tensor | None = None):
        """Eq. (17) for one day: NLL of ``y`` under the reconstruction + gamma * KL.

        ``recon="analytic"``: y_rec ~ N(mu_y, sigma_y^2) of eq. (12) with the posterior.
        ``recon="sample"``: z_post = mu_post + sigma_post * eps (reparameterised), and
        y_rec = alpha + beta z_post ~ N(mu_alpha + beta z_post, sigma_alpha^2).
        FactorVAE-prior has no encoder and no KL: the same NLL with the prior factors.
        ``mask``: see :meth:`features` (padded rows need y = 0).
        Returns (loss, nll, kl) as 0-d tensors.
        """
        e = self.features(x, mask)
        mu_prior, sigma_prior = self.predictor(e)
        if self.encoder is None:
            mu_z, sigma_z, kl = mu_prior, sigma_prior, torch.zeros((), device=x.device)
        else:
            mu_z, sigma_z = self.encoder(y, e, mask)
            kl = gaussian_kl(mu_z, sigma_z, mu_prior, sigma_prior)
        if self.cfg.recon == "analytic":
            mu_rec, sigma_rec = self.decoder(e, mu_z, sigma_z)
        else:
            eps = torch.randn(mu_z.shape, generator=generator, device=mu_z.device,
                              dtype=mu_z.dtype)
            mu_alpha, sigma_alpha, beta = self.decoder.alpha_beta(e)
            mu_rec, sigma_rec = mu_alpha + beta @ (mu_z + sigma_z * eps), sigma_alpha
        nll = gaussian_nll(y, mu_rec, sigma_rec, mask)
        return nll + self.cfg.gamma * kl, nll, kl
