"""Model manifests: what a model file is, and how to feed and read it.

A model file without a manifest is not loaded. The manifest is what lets one decoder serve the
several published variants of a family (SCRFD det_500m/2.5g/10g share a layout) and what the
fleet pushes together with the file; ``sha256`` ties the two together.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Task = Literal["detect", "embed", "liveness"]
Format = Literal["onnx", "dlib"]
#: How the outputs are laid out; each value has exactly one decoder in this package.
Layout = Literal["scrfd", "yunet", "arcface", "sface", "dlib_resnet", "dlib_hog", "binary_live"]

_LAYOUT_TASK: dict[str, str] = {
    "scrfd": "detect",
    "yunet": "detect",
    "dlib_hog": "detect",
    "arcface": "embed",
    "sface": "embed",
    "dlib_resnet": "embed",
    "binary_live": "liveness",
}


class ManifestError(ValueError):
    """A manifest that cannot be used; the message says which field and why."""


class Normalization(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    mean: float = Field(default=0.0, description="Subtracted from every pixel value (0-255)")
    std: float = Field(default=1.0, gt=0, description="Pixel values are divided by this")
    rgb: bool = Field(default=True, description="Feed RGB (True) or BGR (False)")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", description="Model name")
    version: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z_.+-]{0,31}$", description="Version")
    task: Task = Field(description="detect, embed or liveness")
    format: Format = Field(description="onnx or dlib")
    layout: Layout = Field(description="Output layout; selects the decoder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hash of the model file")
    input_size: tuple[int, int] = Field(description="(width, height) fed to the network")
    normalization: Normalization = Field(default_factory=Normalization)
    embedding_size: int | None = Field(default=None, ge=16, le=4096, description="embed only")
    threshold: float = Field(
        description="Recommended decision threshold: cosine similarity for embedders, "
        "score for detectors and liveness"
    )
    margin: float = Field(
        default=0.05, ge=0, le=1, description="Best minus second-best identity needed for 1:N"
    )
    license: str = Field(min_length=1, description="Licence of the weights")
    source: str = Field(min_length=1, description="Where the weights come from")

    @field_validator("input_size")
    @classmethod
    def _size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not all(16 <= v <= 4096 for v in value):
            raise ValueError("input_size sides must be within 16..4096")
        return value

    def model_post_init(self, _ctx: object) -> None:
        if _LAYOUT_TASK[self.layout] != self.task:
            raise ValueError(f"layout {self.layout} is a {_LAYOUT_TASK[self.layout]} layout")
        if self.task == "embed" and self.embedding_size is None:
            raise ValueError("embedders need embedding_size")

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def load_manifest(path: Path) -> Manifest:
    try:
        return Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not JSON: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(manifest)"
        raise ManifestError(f"{path}: {loc}: {first['msg']}") from exc
