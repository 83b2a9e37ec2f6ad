"""Joint attention of VaViM and the action expert, layer by layer (π0-style shared attention).

At every layer i the action tokens attend over [VaViM's keys/values of layer i ; the action keys/
values], with VaViM block i paired with expert block i. The visual rows never see action tokens, so
VaViM's stream is exactly plain VaViM's: it is computed once (:meth:`VideoGPT.visual_kv`) and its
per-layer keys/values are reused by every action query — for all flow steps and all samples.
:func:`joint_forward` also implements the literal concatenated attention of the reference (both
streams as queries, one mask) for checks.
"""

from __future__ import annotations

import torch

from vavam.action.expert import ActionExpert
from vavam.video.model import VideoGPT

VisualKV = list[tuple[torch.Tensor, torch.Tensor]]


class VisualKVCache:
    """VaViM's per-layer keys/values of one context, with room for ``num_action`` action positions after them.

    Each layer's buffer ``[B, H, Nv + Na, Dh]`` holds the visual part once; :meth:`with_action` writes an
    action block into the tail and returns the full keys/values without copying the visual part again.
    """

    def __init__(self, visual_kv: VisualKV, num_action: int) -> None:
        self.num_visual = visual_kv[0][0].shape[2]
        self.num_action = num_action
        self.keys, self.values = [], []
        for k, v in visual_kv:
            b, h, nv, dh = k.shape
            kb = k.new_empty(b, h, nv + num_action, dh)
            vb = v.new_empty(b, h, nv + num_action, dh)
            kb[:, :, :nv] = k
            vb[:, :, :nv] = v
            self.keys.append(kb)
            self.values.append(vb)

    def with_action(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Action ``k, v [B, H, Na, Dh]`` of ``layer`` -> keys/values ``[B, H, Nv + Na, Dh]``."""
        nv = self.num_visual
        if k.shape[2] != self.num_action:
            raise ValueError(f"cache sized for {self.num_action} action tokens, got {k.shape[2]}")
        self.keys[layer][:, :, nv:] = k
        self.values[layer][:, :, nv:] = v
        return self.keys[layer], self.values[layer]


def action_stream(
    expert: ActionExpert,
    action: torch.Tensor,
    visual: VisualKV | VisualKVCache,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """Run the expert's action tokens through all layers, attending to VaViM's keys/values.

    Args:
        expert: the action expert (block i pairs with VaViM block i).
        action: action tokens ``[B, Na, e]``.
        visual: per-layer visual ``(k, v)`` ``[B, H, Nv, Dh]`` or a :class:`VisualKVCache`.
        mask: bool ``[Na, Nv + Na]`` (action rows of the joint mask), or None for full attention.

    Returns:
        the action stream after the expert's final LayerNorm, ``[B, Na, e]``.
    """
    x = action
    for i, block in enumerate(expert.blocks):
        q, k, v = block.attn.qkv(block.norm1(x))  # [B, H, Na, Dh] each
        if isinstance(visual, VisualKVCache):
            keys, values = visual.with_action(i, k, v)
        else:
            vk, vv = visual[i]
            keys, values = torch.cat([vk, k], dim=2), torch.cat([vv, v], dim=2)  # [B, H, Nv + Na, Dh]
        x = x + block.attn.out_proj(block.attn.attend(q, keys, values, mask=mask))
        x = x + block.mlp(block.norm2(x))
    return expert.final_norm(x)


def joint_forward(
    video: VideoGPT, expert: ActionExpert, tokens: torch.Tensor, action: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Literal joint forward over the concatenated sequence (as the reference ``JointModel``).

    Args:
        tokens: long ``[B, T, h, w]``; action: tokens ``[B, Na, e]``; mask: bool ``[Nv + Na, Nv + Na]``.

    Returns:
        ``(visual stream after VaViM's final norm [B, Nv, d], action stream after the expert's final norm [B, Na, e])``.
    """
    xv, xa = video.embed_frames(tokens), action
    nv = xv.shape[1]
    for vb, ab in zip(video.blocks, expert.blocks):
        qv, kv, vv = vb.attn.qkv(vb.norm1(xv))
        qa, ka, va = ab.attn.qkv(ab.norm1(xa))
        y = ab.attn.attend(
            torch.cat([qv, qa], 2), torch.cat([kv, ka], 2), torch.cat([vv, va], 2), mask=mask
        )  # [B, Nv + Na, a]
        xv = xv + vb.attn.out_proj(y[:, :nv])
        xa = xa + ab.attn.out_proj(y[:, nv:])
        xv = xv + vb.mlp(vb.norm2(xv))
        xa = xa + ab.mlp(ab.norm2(xa))
    return video.final_norm(xv), expert.final_norm(xa)
