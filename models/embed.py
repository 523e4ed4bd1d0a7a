"""Face embedders on onnxruntime: the ArcFace family (insightface w600k_mbf / w600k_r50 and
their kin) and SFace (OpenCV Zoo). Aligned 112x112 crops in, L2-normalized float32 out.

ArcFace packs take RGB, (x - 127.5) / 127.5; SFace takes RGB 0-255 unscaled. The manifest's
normalization carries the difference, so one class serves both layouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, cast

import cv2
import numpy as np
import numpy.typing as npt

from biblioedge.models.errors import ModelLoadError
from biblioedge.models.image import Image
from biblioedge.models.manifest import Manifest
from biblioedge.models.onnx import RuntimeOptions, open_session

F32 = npt.NDArray[np.float32]


def l2_normalize(x: F32) -> F32:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    out: F32 = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, crops: Sequence[Image]) -> F32: ...


class OnnxEmbedder:
    """ArcFace or SFace, by manifest; batched when the model's batch axis is dynamic."""

    def __init__(
        self, path: Path, manifest: Manifest, *, options: RuntimeOptions | None = None
    ) -> None:
        self.name = manifest.ref
        self.session = open_session(path, options)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        if len(shape) != 4 or shape[1] != 3 or tuple(shape[2:]) != (112, 112):
            raise ModelLoadError(f"{self.name}: embedder input must be Nx3x112x112, got {shape}")
        self.batched = not isinstance(shape[0], int)
        outs = self.session.get_outputs()
        if len(outs) != 1:
            raise ModelLoadError(f"{self.name}: an embedder has one output, not {len(outs)}")
        self.output_name = outs[0].name
        norm = manifest.normalization
        self.mean, self.std, self.rgb = norm.mean, norm.std, norm.rgb
        assert manifest.embedding_size is not None
        self.dim = manifest.embedding_size
        probe = self.session.run(None, {self.input_name: np.zeros((1, 3, 112, 112), np.float32)})
        if probe[0].reshape(1, -1).shape[1] != self.dim:
            raise ModelLoadError(
                f"{self.name}: output has {probe[0].reshape(1, -1).shape[1]} values, "
                f"manifest says embedding_size {self.dim}"
            )

    def _blob(self, crops: Sequence[Image]) -> F32:
        for crop in crops:
            if crop.shape != (112, 112, 3):
                raise ValueError(f"aligned crops are 112x112x3, got {crop.shape}")
        blob = cv2.dnn.blobFromImages(
            list(crops), 1.0 / self.std, (112, 112), (self.mean,) * 3, swapRB=self.rgb
        )
        return cast(F32, blob)

    def embed(self, crops: Sequence[Image]) -> F32:
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        blob = self._blob(crops)
        if self.batched:
            out = self.session.run([self.output_name], {self.input_name: blob})[0]
        else:
            out = np.vstack(
                [self.session.run([self.output_name], {self.input_name: b[None]})[0] for b in blob]
            )
        return l2_normalize(out.reshape(len(crops), -1).astype(np.float32))
