"""VaViM: the autoregressive video model, its generation loop and its checkpoint adapters."""

from vavam.video.convert import load_video_model, save_video_model
from vavam.video.model import VideoGPT
from vavam.video.sampling import generate_frames, sample_logits

__all__ = ["VideoGPT", "generate_frames", "sample_logits", "load_video_model", "save_video_model"]
