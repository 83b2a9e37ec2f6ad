"""Preset configs, as functions. Vary them with ``dataclasses.replace``.

Each component has a ``*_tiny`` preset that builds and runs in well under a second on a CPU.
"""

from __future__ import annotations

from vavam.config import ActionConfig, VideoConfig, VQConfig

# ---------------------------------------------------------------------------------- tokenizer


def vq16() -> VQConfig:
    """LlamaGen VQ-16: downsampling 16, codebook 16384 x 8 (the tokenizer of the paper)."""
    return VQConfig()


def vq_tiny() -> VQConfig:
    """Small VQ with downsampling 8 and a 1024-code codebook, for tests (channels 16-32-32-64: a float32
    training step costs about a quarter of the 32-channel version's)."""
    return VQConfig(
        codebook_size=1024,
        codebook_embed_dim=8,
        base_channels=16,
        ch_mult=(1, 2, 2, 4),
        z_channels=64,
        num_res_blocks=1,
        norm_groups=8,
    )


def vq_mini() -> VQConfig:
    """The quickstart's tokenizer: downsampling 16 like VQ-16, 64 codes (64x128 frames -> 4x8 tokens).

    Downsampling 16 rather than 8 keeps a frame at 32 tokens, so the tiny VaViM learns to look at the
    previous frame (a 32-token offset) within the quickstart's minutes; at 128 tokens per frame it does not.
    Channels 16-16-32-64-128 (full resolution is the expensive part): a float32 step of 16 frames takes
    0.54 s on 2 AVX2 cores, 3.7x less than channels 32-64-64-128-128. Measured on 256 world scenes,
    300 steps: held-out PSNR 18.6 dB with 512, 128 or 64 codes (18.4 with 32): 32 tokens, not the
    codebook, limit the reconstruction. Fewer codes make tokens steadier from frame to frame (the same
    token at the same place in the next frame: 23 % with 512 codes, 42 % with 64) and VaViM's
    teacher-forced next-frame accuracy beats copying the last frame with 64 codes (0.46 vs 0.43), not
    with 512 (0.22 vs 0.24).
    """
    return VQConfig(
        codebook_size=64,
        codebook_embed_dim=8,
        base_channels=16,
        ch_mult=(1, 1, 2, 4, 8),
        z_channels=64,
        num_res_blocks=1,
        norm_groups=8,
    )


# ---------------------------------------------------------------------------------- VaViM


def vavim_s() -> VideoConfig:
    """VaViM-S: width 768, 24 layers (182,901,504 parameters)."""
    return VideoConfig(width=768)


def vavim_b() -> VideoConfig:
    """VaViM-B: width 1024, 24 layers (319,366,144 parameters)."""
    return VideoConfig(width=1024)


def vavim_l() -> VideoConfig:
    """VaViM-L: width 2048, 24 layers (1,242,712,064 parameters)."""
    return VideoConfig(width=2048)


def vavim_tiny() -> VideoConfig:
    """Two layers of width 64 (head dim 32), 1025-token vocabulary, 4 frames of 4 x 6 tokens."""
    return VideoConfig(
        width=64, num_layers=2, head_dim=32, vocab_size=1025, num_frames=4, tokens_per_frame=24, init_std=0.02
    )


def vavim_mini() -> VideoConfig:
    """The quickstart's VaViM: 4 layers of width 128 (head dim 32), 8 frames of 4 x 8 tokens, ``vq_mini``'s 64 codes
    (+1: the vocabulary is the codebook plus one unused id, as in the released models)."""
    return VideoConfig(
        width=128, num_layers=4, head_dim=32, vocab_size=65, num_frames=8, tokens_per_frame=32, init_std=0.02,
        base_width=128,
    )


# ---------------------------------------------------------------------------------- VaVAM


def vavam_s() -> ActionConfig:
    """VaVAM-S: VaViM-S with an expert of width 192 (21,346,752 expert parameters)."""
    return ActionConfig(video=vavim_s(), width=192)


def vavam_b() -> ActionConfig:
    """VaVAM-B: VaViM-B with an expert of width 256 (37,948,672 expert parameters)."""
    return ActionConfig(video=vavim_b(), width=256)


def vavam_l() -> ActionConfig:
    """VaVAM-L: VaViM-L with an expert of width 512 (151,788,032 expert parameters; the issue text says 151,790,080, which 579·e²+13·e does not give)."""
    return ActionConfig(video=vavim_l(), width=512)


def vavam_tiny() -> ActionConfig:
    """``vavim_tiny`` with an expert of width 16, 4 training frames."""
    return ActionConfig(video=vavim_tiny(), width=16, train_frames=4, init_std=0.02)


def vavam_mini() -> ActionConfig:
    """The quickstart's VaVAM: ``vavim_mini`` with an expert of width 64 (base widths = own widths).

    Trajectories are divided by 35 m rather than the released 70 m: 35 m is about the longest 3-s
    displacement in the embedded world (38 m at its top speed), so the targets span about [-1, 1] like
    the flow's unit noise. Measured on one quickstart dataset and VaViM, 2,000 steps: held-out minADE@5
    2.32 -> 1.87 m (seed 0) and 2.74 -> 2.47 m (seed 1) going from 70 m to 35 m; 20 m gave 1.85 m and
    10 m 2.44 m (seed 0). Runs of one recipe still differ by up to 0.6 m between seeds.
    """
    return ActionConfig(video=vavim_mini(), width=64, base_width=64, base_attention_width=128, init_std=0.02,
                        action_scaling=35.0)


PRESETS = {
    name: fn
    for name, fn in dict(globals()).items()
    if callable(fn) and name.startswith(("vq", "vavim_", "vavam_"))
}


#: preset kinds -> their config type (``train tokenizer`` / ``train video`` / ``train action`` take one kind each)
KINDS: dict[str, type] = {"tokenizer": VQConfig, "video": VideoConfig, "action": ActionConfig}


class UnknownPresetError(ValueError, KeyError):
    """An unknown preset name: bad input (``ValueError``, a one-line error on the command line) that code
    catching the ``KeyError`` this used to be still catches."""

    __str__ = ValueError.__str__  # the message as given (KeyError's would quote it)


def kind_of(config: object) -> str:
    """The preset kind (``tokenizer``, ``video``, ``action``) of a config, or its type name for anything else."""
    return next((kind for kind, cls in KINDS.items() if isinstance(config, cls)), type(config).__name__)


def names(kind: str | None = None) -> list[str]:
    """Preset names, sorted; only those of ``kind`` (a key of :data:`KINDS`) when given."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown preset kind {kind!r}; known: {', '.join(KINDS)}")
    return sorted(n for n, fn in PRESETS.items() if kind is None or isinstance(fn(), KINDS[kind]))


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def get(name: str, kind: str | None = None, flag: str | None = None):
    """Preset config by name (``'vq_tiny'``, ``'vavim_s'``, ...).

    Args:
        name: the preset's name.
        kind: when given (``tokenizer``, ``video``, ``action``), a preset of another kind is refused.
        flag: how the caller's user typed the name (``--preset``), to name it in errors.

    Raises:
        UnknownPresetError: an unknown name (a ``ValueError`` and a ``KeyError``); the message lists the known
            presets (of ``kind`` when given).
        ValueError: a preset of another kind than ``kind``.
    """
    what = f"{flag} {name!r}" if flag else f"preset {name!r}"
    if name not in PRESETS:
        known = f"known {kind} presets" if kind else "known"
        head = f"{flag} {name!r}: unknown preset" if flag else f"unknown preset {name!r}"
        raise UnknownPresetError(f"{head}; {known}: {', '.join(names(kind))}")
    config = PRESETS[name]()
    if kind is not None and not isinstance(config, KINDS[kind]):
        actual = kind_of(config)
        raise ValueError(f"{what} is {_article(actual)} {actual} preset, not {_article(kind)} {kind} one; known {kind} "
                         f"presets: {', '.join(names(kind))}")
    return config
