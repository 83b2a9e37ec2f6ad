"""VaVAM: the action expert, the joint attention with VaViM, masks, the model and its checkpoint adapters."""

from vavam.action.convert import load_action_model, save_action_model
from vavam.action.expert import ActionEncoder, ActionExpert, sinusoidal_embedding
from vavam.action.joint import VisualKVCache, action_stream, joint_forward
from vavam.action.masks import action_rows_samples, action_rows_training, inference_mask, training_mask
from vavam.action.model import VideoActionModel

__all__ = [
    "VideoActionModel",
    "ActionExpert",
    "ActionEncoder",
    "sinusoidal_embedding",
    "VisualKVCache",
    "action_stream",
    "joint_forward",
    "training_mask",
    "inference_mask",
    "action_rows_training",
    "action_rows_samples",
    "load_action_model",
    "save_action_model",
]
