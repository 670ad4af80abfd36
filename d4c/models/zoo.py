"""The offline model zoo: small CLIP models trained on scikit-learn's handwritten digits.

``scripts/train_zoo.py`` trains them and writes the checkpoints shipped in
``d4c/models/checkpoints/`` (fp16 state dicts, loaded through the same path as OpenAI
checkpoint files). They make every stage of the pipeline runnable offline, on a CPU, in minutes.
"""

from __future__ import annotations

from pathlib import Path

from d4c.errors import D4CError
from d4c.models.architectures import SMALL_ARCHITECTURES, ClipArchitecture

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"

ZOO_MODELS: dict[str, str] = {
    "tiny-vit": "VisionTransformer image tower (4 layers x 128, patch 4, 32 px), text 4 x 64",
    "tiny-rn": "ModifiedResNet image tower (layers 1,1,1,1, width 8, 64 px; has BatchNorm), text 4 x 64",
}


def zoo_architecture(name: str) -> ClipArchitecture:
    """The architecture of zoo model ``name``."""
    return SMALL_ARCHITECTURES[name]


def zoo_checkpoint_path(name: str) -> Path:
    """Where the shipped checkpoint of zoo model ``name`` lives."""
    return CHECKPOINT_DIR / f"{name}.pt"


def require_zoo_checkpoint(name: str) -> Path:
    """The shipped checkpoint of zoo model ``name``; one sentence on how to rebuild it when it is missing."""
    path = zoo_checkpoint_path(name)
    if not path.is_file():
        raise D4CError(f"The zoo checkpoint {path} is missing: run `python scripts/train_zoo.py --model {name}` to "
                       "rebuild it.")
    return path
