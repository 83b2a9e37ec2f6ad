"""The action expert of VaVAM: an action encoder, a transformer whose attention works at the video
model's width (so that it can attend jointly with VaViM's keys and values), and a muP readout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vavam.config import ActionConfig
from vavam.nn import Block, depth_scaled_std, layer_norm, mup_normal_, zero_query_rows_


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of flow times: ``t [*S]`` -> ``[*S, dim]`` = [sin(t·ω), cos(t·ω)] (sines first),
    ``ω_i = exp(−i·ln(max_period) / (dim/2 − 1))``, i = 0 .. dim/2 − 1. ``t`` is the raw time in [0, 1].

    Integer times (0 or 1) are embedded as floats; float64 times get float64 frequencies (others: float32
    frequencies cast to ``t``'s dtype).
    """
    half = dim // 2
    if not t.is_floating_point():  # the frequencies would otherwise be truncated to integers (all 0 but ω_0)
        t = t.float()
    work = torch.float64 if t.dtype == torch.float64 else torch.float32
    freqs = torch.arange(half, device=t.device, dtype=work) * -(math.log(max_period) / (half - 1))
    freqs = torch.exp(freqs).to(t.dtype)
    angles = t[..., None] * freqs  # [*S, half]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ActionEncoder(nn.Module):
    """Noisy actions, commands, flow times (and ego speeds) -> action tokens.

    ``a = action_proj(x) + command_emb[c] + horizon_pos_emb[h]`` (``+ speed_proj(v / speed_scaling)``
    when ``config.ego_speed``); ``z = out_proj(SiLU(fuse_proj([τ(t), a])))`` with τ the sinusoidal
    time embedding.
    """

    def __init__(self, config: ActionConfig) -> None:
        super().__init__()
        e = config.width
        if e < 4 or e % 2:  # [sin, cos] of e/2 frequencies spaced over e/2 - 1 intervals must fill the width
            raise ValueError(f"action expert width must be even and at least 4 (sinusoidal time embedding), got {e}")
        self.width = e
        self.max_period = config.max_period
        self.action_proj = nn.Linear(config.action_dim, e, bias=False)
        self.fuse_proj = nn.Linear(2 * e, e, bias=False)
        self.out_proj = nn.Linear(e, e, bias=False)
        self.command_emb = nn.Embedding(config.num_commands, e)
        self.horizon_pos_emb = nn.Embedding(config.horizon, e)
        self.speed_scaling = config.speed_scaling
        self.speed_proj = nn.Linear(1, e, bias=False) if config.ego_speed else None

    def forward(
        self, x: torch.Tensor, command: torch.Tensor, t: torch.Tensor, speed: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x [B, G, H, action_dim]`` (model units), ``command`` long ``[B, G]``, ``t [B, G]``, ``speed``
        m/s ``[B, G]`` (only with ``config.ego_speed``; ignored otherwise) -> ``[B, G, H, e]``.

        G is the number of action groups (frames in training, samples at inference).
        """
        horizon = x.shape[2]
        a = self.action_proj(x)  # [B, G, H, e]
        a = a + self.command_emb(command.long())[:, :, None, :]  # any integer dtype the checks accept
        if self.speed_proj is not None:
            if speed is None:
                raise ValueError("this model reads the ego speed (config.ego_speed): pass speed [B, G] in m/s")
            v = (speed.to(a.dtype) / self.speed_scaling)[..., None]  # [B, G] -> [B, G, 1]
            a = a + self.speed_proj(v)[:, :, None, :]
        a = a + self.horizon_pos_emb(torch.arange(horizon, device=x.device))
        tau = sinusoidal_embedding(t, self.width, self.max_period).to(a.dtype)  # [B, G, e]
        tau = tau[:, :, None, :].expand(-1, -1, horizon, -1)  # [B, G, H, e]
        return self.out_proj(F.silu(self.fuse_proj(torch.cat([tau, a], dim=-1))))


class ActionExpert(nn.Module):
    """Encoder + ``video.num_layers`` pre-LN blocks of width e with attention width = video width and the
    video's head dim + final non-affine LayerNorm + readout ``e -> action_dim`` dividing by ``e / base_width``.

    The blocks are not run on their own: :mod:`vavam.action.joint` pairs block i with VaViM's block i.
    """

    def __init__(self, config: ActionConfig) -> None:
        super().__init__()
        self.config = config
        v = config.video
        self.encoder = ActionEncoder(config)
        self.blocks = nn.ModuleList(
            [Block(config.width, v.head_dim, mlp_ratio=4, attn_width=v.width) for _ in range(v.num_layers)]
        )
        self.final_norm = layer_norm(config.width)
        self.readout = nn.Linear(config.width, config.action_dim, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """muP init of the released expert (σ = init_std, m_e = e / base_width, m_a = a / base_attention_width).

        Matrix-like linears N(0, σ²/m) with their fan-in multiplier; residual projections (attention
        and MLP output) depth-scaled N(0, (σ/√(2L))²/m); query rows zero; the encoder's first linear
        and the embeddings N(0, σ²); readout zero.
        """
        c = self.config
        std, m_e = c.init_std, c.width_mult
        m_a = c.video.width / c.base_attention_width
        res_std = depth_scaled_std(std, len(self.blocks))
        enc = self.encoder
        mup_normal_(enc.action_proj.weight, std)  # vector-like (finite fan-in)
        mup_normal_(enc.fuse_proj.weight, std, m_e)
        mup_normal_(enc.out_proj.weight, std, m_e)
        mup_normal_(enc.command_emb.weight, std)
        mup_normal_(enc.horizon_pos_emb.weight, std)
        if enc.speed_proj is not None:
            mup_normal_(enc.speed_proj.weight, std)  # vector-like (fan-in 1)
        for block in self.blocks:
            mup_normal_(block.attn.qkv_proj.weight, std, m_e)
            zero_query_rows_(block.attn.qkv_proj.weight)
            mup_normal_(block.attn.out_proj.weight, res_std, m_a)
            mup_normal_(block.mlp.fc_in.weight, std, m_e)
            mup_normal_(block.mlp.fc_out.weight, res_std, m_e)
        self.readout.weight.zero_()

    def decode(self, hidden: torch.Tensor) -> torch.Tensor:
        """Normalised action stream ``[..., e]`` -> velocity ``[..., action_dim]`` (muP readout)."""
        return self.readout(hidden / self.config.width_mult)
