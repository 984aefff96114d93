"""minisora: a small, teachable, working Sora.

    from minisora import MiniSora
    model = MiniSora.from_pretrained("outputs/demo/model")     # or MiniSora.from_preset("tiny") to train
    video = model.generate("a red circle moves to the right")  # (T, H, W, 3) uint8

The modules, one concept each, in the order data flows through them: physics, world, frames, data,
batching, text, vae, patchify, attention, dit, flow, pipeline, sampling, prompting, checkpoint, train,
perceive, evaluate, viz, widgets.
"""

from .config import MiniSoraConfig, get_preset
from .data import ShapesWorld
from .pipeline import MiniSora

__all__ = ["MiniSora", "MiniSoraConfig", "ShapesWorld", "get_preset"]
__version__ = "0.1.0"
