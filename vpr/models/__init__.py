"""The descriptor network: backbones, the NetVLAD layer, the embedding head and checkpoint I/O."""

from vpr.models.checkpoint import load_model, load_model_with_pca, load_trunk, save_model
from vpr.models.embed import EmbedNet, ModelConfig, build_model
from vpr.models.netvlad import REGION_NAMES, NetVLAD

__all__ = ["REGION_NAMES", "EmbedNet", "ModelConfig", "NetVLAD", "build_model", "load_model",
           "load_model_with_pca", "load_trunk", "save_model"]
