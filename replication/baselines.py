r"""Table 1's sequence baselines: GRU, ALSTM, Transformer, SFM and GAT, after Qlib.

Each model follows Qlib's public implementation (``qlib/contrib/model/pytorch_*``) and
the hyper-parameters of its benchmark configuration
(``examples/benchmarks/<Model>/workflow_config_*.yaml``); every class docstring names
the files it follows and lists where it departs from them. The models share
one interface (:class:`ScoreModel`): ``forward(x)`` maps one trading day's
cross-section x (N, T, C) to a score (N,); ``loss`` is the MSE between the score and
the CSRankNorm label, as Qlib's ``loss: mse``; ``predict`` returns the score with a
NaN risk estimate (these models have none).

=====  ===========  ==================================  ====================  ====  =======
name   class        Qlib model                          configuration         lr    weights
=====  ===========  ==================================  ====================  ====  =======
gru    GRU          pytorch_gru_ts.GRUModel             gru_Alpha158          2e-4   41,537
alstm  ALSTM        pytorch_alstm_ts.ALSTMModel         alstm_Alpha158        1e-3   53,505
trans  Transformer  pytorch_transformer_ts.Transformer  transformer_Alpha158  1e-4  563,713
sfm    SFM          pytorch_sfm.SFM_Model               sfm_Alpha360          1e-3   26,087
gat    GAT          pytorch_gats_ts.GATModel            gats_Alpha158         1e-4   49,985
=====  ===========  ==================================  ====================  ====  =======

(configuration ``x`` = ``examples/benchmarks/<Model>/workflow_config_x.yaml``; weights
= parameter count with the default config, C = 20.)

Departures shared by all five (the runner, :mod:`replication.train`, decides them):

* Training batches are one trading day's cross-section, days shuffled each epoch.
  Qlib's GRU, ALSTM, Transformer and SFM train on random batches of stock-days
  (800, 800, 8192 and 1600 samples); Qlib's GATs, like us, on one day per batch.
* Early stopping watches the validation Rank IC (Qlib: the validation MSE,
  ``metric: loss``), at most 100 epochs with patience 10 (Qlib: 200 epochs and patience
  10 for GRU, ALSTM and GATs; 100 and 5 for the Transformer; 20 and 20 for SFM). As in
  Qlib: Adam, gradient values clipped at 3.0, the best epoch's weights restored.
* Input is already (N, T, C), so Qlib's reshape of a flat (N, C*T) row is not needed
  (its ``*_ts`` variants take (N, T, C) too). A day holds only stocks traded on all T
  days, where Qlib's ``TSDatasetH`` forward/back-fills missing days.
* Qlib masks NaN labels in its MSE; our training and validation labels are never NaN
  (DropnaLabel), so the loss has no mask.
* The score is always (N,): Qlib's ``.squeeze()`` would give a 0-d tensor for N = 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from replication.config import Overridable

RNNS = ("GRU", "LSTM")


def _check_rnn(cfg) -> None:
    if cfg.rnn not in RNNS:
        raise ValueError(f"rnn must be one of {RNNS}, got {cfg.rnn!r}")


class ScoreModel(nn.Module):
    """The interface of the score-only baselines; subclasses define
    ``forward(x, mask=None) -> (N,)``. ``mask`` (N,) bool marks the real stocks of a day
    padded to a fixed size (static shapes for the GPU); the per-stock sequence models
    ignore it (a stock's score reads its own window only), GAT masks its attention."""

    def loss(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None,
             mask: torch.Tensor | None = None):
        """MSE between the score and the day's CSRankNorm label ``y`` (N,), over the
        ``mask``ed stocks.

        Returns (loss, nll, kl) as the runner expects: (mse, mse, 0). ``generator`` is
        unused: the only randomness, dropout, draws from torch's global generator.
        """
        score = self(x, mask)
        mse = F.mse_loss(score, y) if mask is None else ((score - y) ** 2 * mask).sum() / mask.sum()
        return mse, mse.detach(), torch.zeros((), device=x.device)

    def predict(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        """(score, sigma) each (N,); sigma is NaN: no risk estimate."""
        score = self(x, mask)
        return score, torch.full_like(score, float("nan"))


# --------------------------------------------------------------------------- GRU
@dataclass(frozen=True)
class GRUConfig(Overridable):
    """GRU hyper-parameters (workflow_config_gru_Alpha158.yaml)."""

    C: int = 20  # d_feat: the 20 Alpha158 features (yaml's FilterCol; the paper's set)
    H: int = 64  # hidden_size (yaml)
    layers: int = 2  # num_layers (yaml)
    dropout: float = 0.0  # between GRU layers (yaml)


class GRU(ScoreModel):
    """Qlib ``GRUModel`` (pytorch_gru_ts.py), settings of workflow_config_gru_Alpha158.yaml
    (lr 2e-4, in :data:`MODELS`).

    score = Linear(H -> 1)(h_T), h_T the last GRU layer's output at the last step.

    Departures: only those of the module docstring (Qlib: batch 800, early stop on the
    validation MSE with patience 10, up to 200 epochs).
    """

    def __init__(self, cfg: GRUConfig = GRUConfig()):
        super().__init__()
        self.cfg = cfg
        self.rnn = nn.GRU(cfg.C, cfg.H, cfg.layers, batch_first=True, dropout=cfg.dropout)
        self.fc_out = nn.Linear(cfg.H, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out, _ = self.rnn(x)  # (N, T, C) -> (N, T, H)
        return self.fc_out(out[:, -1])[:, 0]  # (N, H) -> (N,)


# ------------------------------------------------------------------------- ALSTM
@dataclass(frozen=True)
class ALSTMConfig(Overridable):
    """ALSTM hyper-parameters (workflow_config_alstm_Alpha158.yaml)."""

    C: int = 20  # d_feat: the 20 Alpha158 features (yaml)
    H: int = 64  # hidden_size (yaml); the attention's hidden layer has H // 2
    layers: int = 2  # num_layers (yaml)
    dropout: float = 0.0  # between RNN layers and in the attention net (yaml)
    rnn: str = "GRU"  # rnn_type (yaml): Qlib's Alpha158 "ALSTM" runs a GRU

    def __post_init__(self) -> None:
        _check_rnn(self)


class ALSTM(ScoreModel):
    """Qlib ``ALSTMModel`` (pytorch_alstm_ts.py), settings of
    workflow_config_alstm_Alpha158.yaml (lr 1e-3, in :data:`MODELS`).

    u = tanh(Linear(C -> H) x)                              (N, T, H)
    r = RNN(u)                                              (N, T, H)
    w = softmax over t of Linear(H/2 -> 1, no bias)(tanh(Dropout(Linear(H -> H/2) r)))
    score = Linear(2H -> 1)([r_T ; sum_t w_t r_t])

    Departures: only those of the module docstring (Qlib: batch 800, early stop on the
    validation MSE with patience 10, up to 200 epochs).
    """

    def __init__(self, cfg: ALSTMConfig = ALSTMConfig()):
        super().__init__()
        self.cfg = cfg
        self.fc_in = nn.Linear(cfg.C, cfg.H)
        self.rnn = getattr(nn, cfg.rnn)(cfg.H, cfg.H, cfg.layers, batch_first=True,
                                        dropout=cfg.dropout)
        self.att_net = nn.Sequential(nn.Linear(cfg.H, cfg.H // 2), nn.Dropout(cfg.dropout),
                                     nn.Tanh(), nn.Linear(cfg.H // 2, 1, bias=False))
        self.fc_out = nn.Linear(2 * cfg.H, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        r, _ = self.rnn(torch.tanh(self.fc_in(x)))  # (N, T, C) -> (N, T, H)
        w = torch.softmax(self.att_net(r), dim=1)  # (N, T, 1): attention over time
        r_att = (w * r).sum(dim=1)  # (N, H)
        return self.fc_out(torch.cat([r[:, -1], r_att], dim=1))[:, 0]  # (N, 2H) -> (N,)


# ------------------------------------------------------------------- Transformer
@dataclass(frozen=True)
class TransformerConfig(Overridable):
    """Transformer hyper-parameters: Qlib's ``TransformerModel`` defaults
    (pytorch_transformer_ts.py), which workflow_config_transformer_Alpha158.yaml keeps."""

    C: int = 20  # d_feat (Qlib default; the 20 Alpha158 features)
    d_model: int = 64  # Qlib default
    heads: int = 2  # nhead, Qlib default
    layers: int = 2  # num_layers, Qlib default
    d_ff: int = 2048  # feed-forward width: nn.TransformerEncoderLayer's default, Qlib keeps it
    dropout: float = 0.0  # Qlib default
    weight_decay: float = 1e-3  # Qlib's reg: Adam's weight_decay


class PositionalEncoding(nn.Module):
    """Sinusoidal positions (Vaswani et al.), added to the input: (N, T, D) -> (N, T, D).

    PE[t, 2k] = sin(t / 10000^(2k/D)), PE[t, 2k+1] = cos(t / 10000^(2k/D)), t = 0..T-1.
    """

    def __init__(self, d_model: int, max_len: int = 1000):  # max_len as Qlib
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]  # (L, 1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                        * (-math.log(10000.0) / d_model))  # (D/2,)
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe, persistent=False)  # a constant, not training state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:x.shape[1]]


class Transformer(ScoreModel):
    """Qlib ``Transformer`` (pytorch_transformer_ts.py) with its ``TransformerModel``
    defaults, as workflow_config_transformer_Alpha158.yaml runs it (lr 1e-4 in
    :data:`MODELS`; reg 1e-3 as ``weight_decay``).

    u = Linear(C -> d_model) x + PE                         (N, T, d_model)
    v = 2 post-norm encoder layers (2 heads, ReLU feed-forward 2048), no mask
    score = Linear(d_model -> 1)(v_T)

    Only v_T is read, so the last layer runs at position T alone (:func:`_last_position`,
    equal to Qlib's full computation up to rounding, tested): half the arithmetic.

    The encoder attends over the T days of the window in both directions (no causal
    mask, as Qlib): every day in it is at or before the prediction day s. As in Qlib,
    ``nn.TransformerEncoder`` clones one layer, so both layers start from equal weights.

    Departures: those of the module docstring (Qlib: batch 8192, early stop on the
    validation MSE with patience 5, up to 100 epochs); batch-first tensors instead of
    Qlib's (T, N, D) layout (the same computation).
    """

    def __init__(self, cfg: TransformerConfig = TransformerConfig()):
        super().__init__()
        self.cfg = cfg
        self.weight_decay = cfg.weight_decay  # read by replication.train.fit
        self.feature_layer = nn.Linear(cfg.C, cfg.d_model)
        self.pos_encoder = PositionalEncoding(cfg.d_model)
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.heads, cfg.d_ff, cfg.dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.decoder_layer = nn.Linear(cfg.d_model, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        u = self.pos_encoder(self.feature_layer(x))  # (N, T, C) -> (N, T, d_model)
        *first, last = self.encoder.layers
        for layer in first:
            u = layer(u)  # (N, T, d_model)
        return self.decoder_layer(_last_position(last, u))[:, 0]  # (N,)


def _last_position(layer: nn.TransformerEncoderLayer, u: torch.Tensor) -> torch.Tensor:
    """``layer(u)[:, -1]`` for a post-norm encoder layer without masks, computed for the
    last position only: (N, T, D) -> (N, D).

    The score reads only v_T, so the last layer needs its keys and values at every
    position but its query, residual, norms and feed-forward (2048 wide, most of the
    model's arithmetic) at position T alone; this skips T - 1 of T feed-forward rows in
    that layer and gives the same numbers as ``layer(u)[:, -1]`` up to float rounding
    (tested), with the same parameters and dropout modules.
    """
    if layer.norm_first:
        raise ValueError("_last_position implements the post-norm layer (norm_first=False)")
    q = u[:, -1:]  # (N, 1, D)
    a = layer.self_attn(q, u, u, need_weights=False)[0]  # (N, 1, D)
    x = layer.norm1(q + layer.dropout1(a))
    x = layer.norm2(x + layer._ff_block(x))
    return x[:, 0]


# --------------------------------------------------------------------------- SFM
@dataclass(frozen=True)
class SFMConfig(Overridable):
    """SFM hyper-parameters (workflow_config_sfm_Alpha360.yaml, with the paper's 20
    features). The Alpha360 file is the SFM configuration that runs ``SFM_Model``: the
    one Alpha158 file seen names a ``pytorch_sfm_ts`` module with ALSTM's arguments
    (num_layers, rnn_type GRU), which ``SFM_Model`` does not take, and lr 5e-2."""

    C: int = 20  # input features per day (the yaml's d_feat 6 is Alpha360's)
    H: int = 64  # hidden_size (yaml)
    freq_dim: int = 25  # K, number of frequencies (yaml)
    output_dim: int = 32  # width of the output layer p (yaml)


class SFM(ScoreModel):
    r"""State Frequency Memory (Zhang, Aggarwal & Qi, KDD 2017) as Qlib's ``SFM_Model``
    (pytorch_sfm.py), settings of workflow_config_sfm_Alpha360.yaml (lr 1e-3 in
    :data:`MODELS`).

    With s(.) PyTorch's Hardsigmoid, relu6(z + 3) / 6 (Qlib's choice, not Keras's
    0.2 z + 0.5), h_0 = 0, S_0 = 0, frequencies w_k = k / K (k = 0..K-1) and t = 1..T:

    i   = s(x_t W_i + h_{t-1} U_i + b_i)                       (N, H)  input gate
    ste = s(x_t W_ste + h_{t-1} U_ste + b_ste)                 (N, H)  state forget gate
    fre = s(x_t W_fre + h_{t-1} U_fre + b_fre)                 (N, K)  frequency forget gate
    f   = ste (x) fre                                          (N, H, K)
    c   = i * tanh(x_t W_c + h_{t-1} U_c + b_c)                (N, H)
    S_re = f * S_re + c cos(2 pi w t);  S_im = f * S_im + c sin(2 pi w t)   (N, H, K)
    A   = S_re^2 + S_im^2                                      (N, H, K)  amplitude
    a   = tanh(A U_a + b_a)                                    (N, H)     U_a: (K, 1)
    o   = s(x_t W_o + h_{t-1} U_o + b_o)                       (N, H)
    h_t = o * a
    p   = h_T W_p + b_p                                        (N, output_dim)
    score = Linear(output_dim -> 1)(p)                         (N,)

    Initialisation as Qlib: W (and W_p) Xavier-uniform, U orthogonal, b_ste = b_fre = 1,
    other biases 0.

    Departures: those of the module docstring (Qlib's Alpha360 config: batch 1600,
    early stop on the validation MSE with patience 20, up to 20 epochs); the
    yaml's dropout_W = dropout_U = 0.5 are omitted, since Qlib's ``SFM_Model`` never
    applies them (its dropout masks are constant ones); stocks run in parallel and the
    state is kept in locals rather than on the module; the memory S is kept in the
    model's dtype, where Qlib's float64 frequency vector promotes it to float64 (the
    cos/sin table is computed here in float64, then cast).
    """

    def __init__(self, cfg: SFMConfig = SFMConfig()):
        super().__init__()
        self.cfg = cfg
        C, H, K = cfg.C, cfg.H, cfg.freq_dim

        def xavier(*shape):
            return nn.Parameter(nn.init.xavier_uniform_(torch.empty(shape)))

        def orthogonal(*shape):
            return nn.Parameter(nn.init.orthogonal_(torch.empty(shape)))

        def const(value, n):
            return nn.Parameter(torch.full((n,), float(value)))

        # created in Qlib's order
        self.W_i, self.U_i, self.b_i = xavier(C, H), orthogonal(H, H), const(0, H)
        self.W_ste, self.U_ste, self.b_ste = xavier(C, H), orthogonal(H, H), const(1, H)
        self.W_fre, self.U_fre, self.b_fre = xavier(C, K), orthogonal(H, K), const(1, K)
        self.W_c, self.U_c, self.b_c = xavier(C, H), orthogonal(H, H), const(0, H)
        self.W_o, self.U_o, self.b_o = xavier(C, H), orthogonal(H, H), const(0, H)
        self.U_a, self.b_a = orthogonal(K, 1), const(0, H)
        self.W_p, self.b_p = xavier(H, cfg.output_dim), const(0, cfg.output_dim)
        self.fc_out = nn.Linear(cfg.output_dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n, n_steps, _ = x.shape
        H, K = self.cfg.H, self.cfg.freq_dim
        sizes = (H, H, K, H, H)  # gates i, ste, fre, candidate c, o
        W = torch.cat([self.W_i, self.W_ste, self.W_fre, self.W_c, self.W_o], dim=1)  # (C, 4H+K)
        U = torch.cat([self.U_i, self.U_ste, self.U_fre, self.U_c, self.U_o], dim=1)  # (H, 4H+K)
        b = torch.cat([self.b_i, self.b_ste, self.b_fre, self.b_c, self.b_o])  # (4H+K,)
        xw = x @ W + b  # (N, T, C) -> (N, T, 4H+K): input terms of every step at once
        t = torch.arange(1, n_steps + 1, dtype=torch.float64, device=x.device)[:, None]
        freq = torch.arange(K, dtype=torch.float64, device=x.device) / K  # w_k = k / K
        omega = 2 * math.pi * t * freq  # (T, K)
        cos, sin = torch.cos(omega).to(x.dtype), torch.sin(omega).to(x.dtype)
        h = x.new_zeros(n, H)
        S_re = x.new_zeros(n, H, K)
        S_im = x.new_zeros(n, H, K)
        for step in range(n_steps):
            z_i, z_ste, z_fre, z_c, z_o = (xw[:, step] + h @ U).split(sizes, dim=1)
            i, ste, fre, o = (F.hardsigmoid(z) for z in (z_i, z_ste, z_fre, z_o))
            f = ste[:, :, None] * fre[:, None, :]  # (N, H, K)
            c = (i * torch.tanh(z_c))[:, :, None]  # (N, H, 1)
            S_re = f * S_re + c * cos[step]  # (N, H, K)
            S_im = f * S_im + c * sin[step]
            A = S_re ** 2 + S_im ** 2  # (N, H, K)
            a = torch.tanh((A @ self.U_a)[..., 0] + self.b_a)  # (N, H, K) @ (K, 1) -> (N, H)
            h = o * a
        p = h @ self.W_p + self.b_p  # (N, output_dim)
        return self.fc_out(p)[:, 0]  # (N,)


# --------------------------------------------------------------------------- GAT
@dataclass(frozen=True)
class GATConfig(Overridable):
    """GAT hyper-parameters (workflow_config_gats_Alpha158.yaml, except ``rnn``)."""

    C: int = 20  # d_feat: the 20 Alpha158 features (yaml)
    H: int = 64  # hidden_size (yaml)
    layers: int = 2  # num_layers (yaml)
    dropout: float = 0.7  # between RNN layers (yaml)
    rnn: str = "GRU"  # base_model: GATModel's default; the yaml's LSTM came pretrained (see GAT)
    leaky_slope: float = 0.01  # nn.LeakyReLU's default, which Qlib uses

    def __post_init__(self) -> None:
        _check_rnn(self)


class GAT(ScoreModel):
    """Qlib ``GATModel`` (pytorch_gats_ts.py, "GATs"), settings of
    workflow_config_gats_Alpha158.yaml (lr 1e-4 in :data:`MODELS`).

    h_i = RNN(x_i) at the last step                         (N, H), per stock
    e_ij = LeakyReLU(a_1 . W h_j + a_2 . W h_i)             (N, N), over ALL the day's stocks
    att_ij = softmax over j of e_ij
    h' = att h + h                                           (N, H)
    score = Linear(H -> 1)(LeakyReLU(Linear(H -> H) h'))

    W (``transformation``, with bias) only enters the attention logits; the messages are
    the raw h_j, as in Qlib. a = [a_1 ; a_2] (2H,) keeps Qlib's order: its
    ``cal_attention`` concatenates [W h_j ; W h_i] for the pair (i, j); the split
    e_ij = a_1 . W h_j + a_2 . W h_i avoids the (N, N, 2H) tensor. a ~ N(0, 1) as Qlib.

    Departures: those of the module docstring (Qlib: early stop on the validation MSE
    with patience 10, up to 200 epochs; its ``DailyBatchSampler`` visits the training
    days in calendar order every epoch, ours are shuffled). The yaml's base model is an
    LSTM whose ``rnn`` and ``fc_out`` weights are copied from Qlib's pretrained LSTM
    benchmark (``with_pretrain``, csi300_lstm_ts.pkl); here the per-stock RNN is a GRU
    (GATModel's default ``base_model``; ``rnn="LSTM"`` gives the yaml's), and every
    weight starts from its random initialisation: no pretrained base model.
    """

    def __init__(self, cfg: GATConfig = GATConfig()):
        super().__init__()
        self.cfg = cfg
        self.rnn = getattr(nn, cfg.rnn)(cfg.C, cfg.H, cfg.layers, batch_first=True,
                                        dropout=cfg.dropout)
        self.transformation = nn.Linear(cfg.H, cfg.H)
        self.a = nn.Parameter(torch.randn(2 * cfg.H))
        self.fc = nn.Linear(cfg.H, cfg.H)
        self.fc_out = nn.Linear(cfg.H, 1)
        self.act = nn.LeakyReLU(cfg.leaky_slope)

    def attention(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """att (N, N): row i is stock i's softmax weights over the day's stocks j
        (padded stocks j get weight 0)."""
        wh = self.transformation(h)  # (N, H)
        a_1, a_2 = self.a.chunk(2)  # neighbour j, self i
        e = self.act((wh @ a_2)[:, None] + (wh @ a_1)[None, :])  # e[i, j], (N, N)
        if mask is not None:
            e = e.masked_fill(~mask[None, :], float("-inf"))
        return torch.softmax(e, dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out, _ = self.rnn(x)  # (N, T, C) -> (N, T, H)
        h = out[:, -1]  # (N, H)
        h = self.attention(h, mask) @ h + h  # (N, N) @ (N, H) -> (N, H)
        return self.fc_out(self.act(self.fc(h)))[:, 0]  # (N,)


# name -> (config class, model class, TrainConfig defaults): Qlib's learning rates
MODELS = {
    "gru": (GRUConfig, GRU, {"lr": 2e-4}),  # workflow_config_gru_Alpha158.yaml
    "alstm": (ALSTMConfig, ALSTM, {"lr": 1e-3}),  # workflow_config_alstm_Alpha158.yaml
    "trans": (TransformerConfig, Transformer, {"lr": 1e-4}),  # pytorch_transformer_ts.py default
    "sfm": (SFMConfig, SFM, {"lr": 1e-3}),  # workflow_config_sfm_Alpha360.yaml
    "gat": (GATConfig, GAT, {"lr": 1e-4}),  # workflow_config_gats_Alpha158.yaml
}
