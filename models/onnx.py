"""onnxruntime sessions built one way for every model: CPU, bounded threads, known inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from biblioedge.models.errors import ModelLoadError

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class RuntimeOptions:
    """onnxruntime tuning. Two intra-op threads suit a Pi 4/5 that also runs camera and UI."""

    intra_threads: int = 2
    inter_threads: int = 1
    optimization: str = "all"


def open_session(path: Path, options: RuntimeOptions | None = None) -> ort.InferenceSession:
    opts = options or RuntimeOptions()
    so = ort.SessionOptions()
    so.intra_op_num_threads = opts.intra_threads
    so.inter_op_num_threads = opts.inter_threads
    so.graph_optimization_level = _LEVELS[opts.optimization]
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own unrelated exception types
        raise ModelLoadError(f"{path.name}: not a loadable ONNX model: {exc}") from exc


def input_hw(session: ort.InferenceSession) -> tuple[int | None, int | None]:
    """(height, width) of the first input when fixed, None for dynamic axes."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or shape[1] not in (3, "3"):
        raise ModelLoadError(f"expected an NCHW input with 3 channels, got {shape}")
    h, w = shape[2], shape[3]
    return (h if isinstance(h, int) else None, w if isinstance(w, int) else None)
