"""VaVAM: a frozen VaViM plus a flow-matching action expert reading its keys/values layer by layer."""

from __future__ import annotations

import math

import torch
from torch import nn

from vavam.checks import check_commands, check_finite, check_positive_int
from vavam import flow
from vavam.action.expert import ActionExpert
from vavam.action.joint import VisualKV, VisualKVCache, action_stream
from vavam.action.masks import action_rows_samples, action_rows_training
from vavam.config import ActionConfig
from vavam.types import constant_velocity_trajectory
from vavam.video.model import VideoGPT


class VideoActionModel(nn.Module):
    """VaVAM built from an :class:`~vavam.config.ActionConfig`: ``video`` (a :class:`VideoGPT`, frozen:
    ``requires_grad=False``) and ``expert`` (an :class:`ActionExpert`).

    Units: noisy actions, noise and velocities are in model units (metres / ``action_scaling``);
    trajectories are in metres, ego frame x forward, y left. With ``config.speed_prior`` the model
    units hold the deviation from the constant-velocity trajectory (:meth:`_speed_prior`).
    """

    def __init__(self, config: ActionConfig) -> None:
        super().__init__()
        if config.video.width % config.video.head_dim:
            raise ValueError("video width must be a multiple of its head dim")
        if not (math.isfinite(config.action_scaling) and config.action_scaling > 0):
            raise ValueError(f"action_scaling must be positive, finite metres, got {config.action_scaling}")
        if config.speed_prior and not config.ego_speed:
            raise ValueError("speed_prior needs ego_speed: the prior is built from the ego speed the model reads")
        self.config = config
        self.video = VideoGPT(config.video)
        self.video.requires_grad_(False)
        self.expert = ActionExpert(config)

    # ------------------------------------------------------------------ pieces

    def visual_kv(self, tokens: torch.Tensor) -> VisualKV:
        """VaViM's per-layer keys/values over ``tokens [B, T, h, w]``: ``num_layers`` pairs ``[B, H, T·h·w, Dh]``.

        Computed without autograd when VaViM is frozen (it never depends on the actions).
        """
        frozen = not any(p.requires_grad for p in self.video.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            return self.video.visual_kv(tokens)

    def _check_speed(self, speed: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | None:
        """``speed`` checked against ``shape`` when the model reads it (None when it does not)."""
        if not self.config.ego_speed:
            return None
        if speed is None:
            raise ValueError("this model reads the ego speed (config.ego_speed): pass speed (m/s)")
        speed = torch.as_tensor(speed)
        if tuple(speed.shape) != tuple(shape):
            raise ValueError(f"speed must have shape {tuple(shape)}, got {tuple(speed.shape)}")
        check_finite(speed, "speed")
        return speed.to(self.expert.readout.weight.device)

    def _speed_prior(self, speed: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        """The constant-velocity baseline's trajectory in metres, ``[..., H, 2]`` in ``like``'s dtype and
        device, from ``speed [...]`` m/s (straight ahead, waypoint k at ``speed · 0.5 s · k``); None when
        the model has no prior (``config.speed_prior``), whose flow then generates the trajectory itself."""
        if speed is None or not self.config.speed_prior:
            return None
        return constant_velocity_trajectory(speed, self.config.horizon).to(like)

    # ------------------------------------------------------------------ training path

    def velocity(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        command: torch.Tensor,
        tokens: torch.Tensor,
        return_embeds: bool = False,
        visual: VisualKV | None = None,
        speed: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predicted velocity of every frame's trajectory, with the training mask.

        Args:
            x_t: noisy actions ``[B, T, H, 2]`` (model units).
            t: flow times ``[B, T]``.
            command: long ``[B, T]`` (0 right, 1 left, 2 straight).
            tokens: long ``[B, T, h, w]``.
            return_embeds: also return the expert stream after its final norm, ``[B, T, H, e]``.
            visual: VaViM's keys/values of ``tokens`` (:meth:`visual_kv`) when already computed.
            speed: ego speed of every frame, m/s ``[B, T]`` (needed with ``config.ego_speed``, else ignored).

        Returns:
            velocity ``[B, T, H, 2]`` (model units).
        """
        if x_t.dim() != 4 or x_t.shape[2:] != (self.config.horizon, self.config.action_dim):
            raise ValueError(f"x_t must be [B, T, {self.config.horizon}, {self.config.action_dim}], "
                             f"got {tuple(x_t.shape)}")
        b, t_frames, horizon, _ = x_t.shape
        check_finite(x_t, "x_t")
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (b, t_frames):
            what = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"t must hold one flow time per sample and frame, [B, T] = {(b, t_frames)}, got {what}")
        check_finite(t, "t")
        check_commands(command, (b, t_frames))
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 4:
            what = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be [B, T, h, w], got {what}")
        if tokens.shape[:2] != (b, t_frames):
            raise ValueError(f"tokens {tuple(tokens.shape)} and actions {tuple(x_t.shape)} disagree on [B, T]")
        speed = self._check_speed(speed, (b, t_frames))
        x_t = x_t.to(self.expert.readout.weight.dtype)  # another float dtype is the same state: cast, no matmul error
        p = tokens.shape[2] * tokens.shape[3]
        visual = self.visual_kv(tokens) if visual is None else visual
        action = self.expert.encoder(x_t, command, t, speed).reshape(b, t_frames * horizon, -1)  # [B, T·H, e]
        mask = action_rows_training(t_frames, p, horizon, device=x_t.device)
        hidden = action_stream(self.expert, action, visual, mask)
        hidden = hidden.view(b, t_frames, horizon, -1)  # [B, T·H, e] -> [B, T, H, e]
        v = self.expert.decode(hidden)
        return (v, hidden) if return_embeds else v

    def flow_loss(
        self,
        tokens: torch.Tensor,
        command: torch.Tensor,
        actions: torch.Tensor,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        repeats: int = 1,
        speed: torch.Tensor | None = None,
        per_window: bool = False,
    ) -> torch.Tensor:
        """Flow-matching loss (mean squared velocity error over ``B·R·T·H·2`` values), scalar.

        Args:
            tokens: long ``[B, T, h, w]``; command: long ``[B, T]``; actions: metres ``[B, T, H, 2]``.
            t: flow times ``[B·R, T]`` (default: Beta(1.5, 1) sampler); noise: ``[B·R, T, H, 2]`` (default N(0, I)).
            repeats: R flow samples (noise, time) per window, rows ``b·R .. b·R + R − 1`` for window ``b``.
                VaViM's stream, most of a step's cost, is computed once per window and shared by its R
                samples, so the expert sees R times more noisy trajectories for little extra compute (the
                diffusion-batch multiplier of MAR). R = 1 is the released recipe.
            speed: ego speed of every frame, m/s ``[B, T]`` (needed with ``config.ego_speed``, else ignored).
            per_window: the mean of each window's ``R·T·H·2`` values ``[B]`` instead of the scalar.
        """
        c = self.config
        check_positive_int(repeats, "repeats")
        shape_ok = isinstance(actions, torch.Tensor) and actions.dim() == 4
        if not shape_ok or actions.shape[2:] != (c.horizon, c.action_dim):
            what = tuple(actions.shape) if isinstance(actions, torch.Tensor) else type(actions).__name__
            raise ValueError(f"actions must be metres [B, T, {c.horizon}, {c.action_dim}], got {what}")
        check_finite(actions, "actions")
        actions = actions.to(self.expert.readout.weight.dtype)  # e.g. float64 from numpy: cast to the model's dtype
        speed = self._check_speed(speed, tuple(actions.shape[:2]))
        prior = self._speed_prior(speed, actions)
        x1 = (actions if prior is None else actions - prior) / c.action_scaling
        visual = self.visual_kv(tokens)
        if repeats > 1:
            x1, command, tokens = (z.repeat_interleave(repeats, dim=0) for z in (x1, command, tokens))
            if speed is not None:
                speed = speed.repeat_interleave(repeats, dim=0)
            visual = [(k.repeat_interleave(repeats, dim=0), v.repeat_interleave(repeats, dim=0)) for k, v in visual]
        if noise is None:
            noise = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        else:  # a misshapen noise would broadcast against x1 silently
            if not isinstance(noise, torch.Tensor) or noise.shape != x1.shape:
                what = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
                raise ValueError(f"noise must be [B·R, T, H, 2] = {tuple(x1.shape)}, got {what}")
            check_finite(noise, "noise")
            noise = noise.to(x1.dtype)
        if t is None:
            t = flow.sample_time(tuple(x1.shape[:2]), sig_min=c.flow_sig_min, generator=generator, device=x1.device)
        else:
            if not isinstance(t, torch.Tensor) or t.shape != x1.shape[:2]:
                what = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"t must be [B·R, T] = {tuple(x1.shape[:2])}, got {what}")
            check_finite(t, "t")
        x_t = flow.interpolate(noise, x1, t, c.flow_sig_min)
        v = self.velocity(x_t, t.to(x1.dtype), command, tokens, visual=visual, speed=speed)
        squared = (v - flow.target_velocity(noise, x1, c.flow_sig_min)) ** 2  # [B·R, T, H, 2]
        return squared.reshape(len(actions), -1).mean(1) if per_window else squared.mean()  # [B] or scalar

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def sample_trajectory(
        self,
        tokens: torch.Tensor,
        command: torch.Tensor,
        num_samples: int = 1,
        num_steps: int | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_intermediate: bool = False,
        speed: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Sample trajectories for the last context frame by Euler integration of the flow.

        VaViM's stream is computed once per call; the K samples are batched as K independent action
        groups attending to the same cached visual keys/values.

        Args:
            tokens: long ``[B, T, h, w]``, T ≤ the model's frames.
            command: long ``[B]`` (that of the last context frame; ``[B, 1]`` accepted).
            num_samples: K.
            num_steps: Euler steps (None: the config's ``num_inference_steps``).
            noise: the state at t = 0 in model units ``[B, K, H, 2]`` (default N(0, I) from ``generator``, drawn on
                the generator's device, the CPU without one, sample by sample: the first samples of a call with
                more are those of a call with fewer, for the same generator state and batch).
            return_intermediate: also return the trajectory after each step, ``[S, B, K, H, 2]`` metres.
            speed: ego speed at the last context frame, m/s ``[B]`` (``[B, T]``: the last column is used);
                needed with ``config.ego_speed``, else ignored.

        Returns:
            trajectories in metres ``[B, K, H, 2]`` (x forward, y left), on ``tokens``' device (the inputs are
            moved to the model's device for the computation).
        """
        c = self.config
        if tokens.dim() != 4:
            raise ValueError(f"tokens must be [B, T, h, w], got shape {tuple(tokens.shape)}")
        b = tokens.shape[0]
        k = num_samples
        check_positive_int(k, "num_samples")
        num_steps = c.num_inference_steps if num_steps is None else num_steps
        check_positive_int(num_steps, "num_steps")
        if tokens.shape[1] > c.video.num_frames:
            raise ValueError(f"{tokens.shape[1]} context frames exceed the model's {c.video.num_frames}")
        if isinstance(command, torch.Tensor) and command.dim() == 2:  # [B, T]: that of the last context frame
            command = command[:, -1]
        check_commands(command, (b,))
        if speed is not None and torch.as_tensor(speed).dim() == 2:  # [B, T]: that of the last context frame
            speed = torch.as_tensor(speed)[:, -1]
        speed = self._check_speed(speed, (b,))
        param = self.expert.readout.weight
        out_device = tokens.device  # inputs may live elsewhere than the model: computed there, returned here
        tokens, command = tokens.to(param.device), command.to(param.device)
        if noise is None:  # drawn where the generator lives (CPU without one), then moved to the model
            where = generator.device if generator is not None else "cpu"
            # one draw per sample, samples outermost, so that sample j of each row is the same whatever K (CPU
            # randn fills fewer than 16 values by another method than 16 or more: one [B, K, H, 2] draw is not)
            shape = (b, c.horizon, c.action_dim)
            noise = torch.stack([torch.randn(shape, generator=generator, device=where, dtype=param.dtype)
                                 for _ in range(k)], 1).to(param.device)  # [B, K, H, 2]
        elif not isinstance(noise, torch.Tensor) or noise.shape != (b, k, c.horizon, c.action_dim):
            what = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise must be [B, K, H, 2] = {(b, k, c.horizon, c.action_dim)}, got {what}")
        else:
            check_finite(noise, "noise")
            noise = noise.to(device=param.device, dtype=param.dtype)
        cache = VisualKVCache(self.visual_kv(tokens), k * c.horizon)
        mask = action_rows_samples(cache.num_visual, k, c.horizon, device=noise.device)
        commands = command[:, None].expand(b, k)  # [B, K]
        speeds = None if speed is None else speed[:, None].expand(b, k)  # [B, K]

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            action = self.expert.encoder(x, commands, t, speeds).reshape(b, k * c.horizon, -1)  # [B, K·H, e]
            hidden = action_stream(self.expert, action, cache, mask)
            return self.expert.decode(hidden).view(b, k, c.horizon, c.action_dim)

        x, states = flow.euler_integrate(velocity, noise, num_steps, time_shape=(b, k), return_intermediate=True)
        if c.final_action_clip_value is not None:
            x = x.clamp(-c.final_action_clip_value, c.final_action_clip_value)
        traj = x * c.action_scaling
        prior = self._speed_prior(speeds, traj)
        if prior is not None:
            traj = traj + prior
        if return_intermediate:
            states = states * c.action_scaling
            states = states if prior is None else states + prior
            return traj.to(out_device), states.to(out_device)
        return traj.to(out_device)
