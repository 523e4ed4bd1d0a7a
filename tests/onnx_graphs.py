"""Small ONNX graphs with exactly the inputs and outputs of SCRFD, YuNet, ArcFace and SFace.

Pretrained weights cannot be downloaded here, so these random-weight graphs drive the real
loading, preprocessing and decoding code. One strided convolution per feature level produces
each head; sigmoids keep scores in [0, 1] as in the real models.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(arr.astype(np.float32), name)


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, arr: np.ndarray, dtype: Any = np.float32) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), name))
        return name

    def conv(
        self, x: str, cin: int, cout: int, k: int, stride: int, scale: float, bias: float
    ) -> str:
        w = self.const(self.rng.standard_normal((cout, cin, k, k)) * scale)
        b = self.const(np.full(cout, bias) + self.rng.standard_normal(cout) * 0.1)
        out = self.name("conv")
        self.nodes.append(
            helper.make_node(
                "Conv", [x, w, b], [out], strides=[stride, stride], kernel_shape=[k, k]
            )
        )
        return out

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def head(
        self, x: str, width: int, per_cell: int, out_name: str, sigmoid: bool, batch_dim: bool
    ) -> str:
        # (1, per_cell*width, h, w) -> (1, h, w, per_cell*width) -> (1, h*w*per_cell, width)
        t = self.op("Transpose", [x], perm=[0, 2, 3, 1])
        shape = self.const(np.array([1, -1, width] if batch_dim else [-1, width]), np.int64)
        r = self.op("Reshape", [t, shape])
        if sigmoid:
            r = self.op("Sigmoid", [r])
        self.nodes.append(helper.make_node("Identity", [r], [out_name]))
        return out_name


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def scrfd(
    path: Path, size: int = 320, seed: int = 0, kps: bool = True, batch_dim: bool = True
) -> Path:
    """insightface SCRFD layout: 3 strides x (score, bbox, kps), 2 anchors per cell."""
    b = _Builder(seed)
    outs_s, outs_b, outs_k = [], [], []
    x = "input.1"
    for stride in (8, 16, 32):
        feat = b.conv(x, 3, 8, stride, stride, 0.02, 0.0)
        feat = b.op("Relu", [feat])
        s = b.conv(feat, 8, 2, 1, 1, 3.0, -0.3)
        bb = b.conv(feat, 8, 8, 1, 1, 0.3, 1.5)
        bb = b.op("Relu", [bb])
        outs_s.append(b.head(s, 1, 2, f"score_{stride}", True, batch_dim))
        outs_b.append(b.head(bb, 4, 2, f"bbox_{stride}", False, batch_dim))
        if kps:
            k = b.conv(feat, 8, 20, 1, 1, 0.3, 0.0)
            outs_k.append(b.head(k, 10, 2, f"kps_{stride}", False, batch_dim))

    def dims(stride: int, width: int) -> list[int]:
        cells = (size // stride) ** 2 * 2
        return [1, cells, width] if batch_dim else [cells, width]

    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, dims(int(n.split("_")[1]), w))
        for group, w in ((outs_s, 1), (outs_b, 4), (outs_k, 10))
        for n in group
    ]
    inp = helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 3, size, size])
    return _save(helper.make_graph(b.nodes, "scrfd", [inp], outputs, b.inits), path)


def yunet(path: Path, size: int = 320, seed: int = 0) -> Path:
    """OpenCV Zoo YuNet 2023mar layout: cls, obj, bbox, kps for strides 8, 16, 32."""
    b = _Builder(seed)
    heads: dict[str, str] = {}
    x = "input"
    for stride in (8, 16, 32):
        # YuNet takes raw 0-255 pixels: a small first layer keeps log-sizes in a sane range
        feat = b.op("Relu", [b.conv(x, 3, 8, stride, stride, 0.0004, 0.0)])
        heads[f"cls_{stride}"] = b.head(
            b.conv(feat, 8, 1, 1, 1, 3.0, 0.5), 1, 1, f"cls_{stride}", True, True
        )
        heads[f"obj_{stride}"] = b.head(
            b.conv(feat, 8, 1, 1, 1, 3.0, 0.5), 1, 1, f"obj_{stride}", True, True
        )
        heads[f"bbox_{stride}"] = b.head(
            b.conv(feat, 8, 4, 1, 1, 0.5, 0.8), 4, 1, f"bbox_{stride}", False, True
        )
        heads[f"kps_{stride}"] = b.head(
            b.conv(feat, 8, 10, 1, 1, 0.5, 0.5), 10, 1, f"kps_{stride}", False, True
        )
    order = [f"{p}_{s}" for p in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)]
    width = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}
    outputs = [
        helper.make_tensor_value_info(
            n, TensorProto.FLOAT, [1, (size // int(n.split("_")[1])) ** 2, width[n.split("_")[0]]]
        )
        for n in order
    ]
    inp = helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 3, size, size])
    return _save(helper.make_graph(b.nodes, "yunet", [inp], outputs, b.inits), path)


def embedder(
    path: Path, dim: int = 512, seed: int = 0, name: str = "arcface", dynamic_batch: bool = True
) -> Path:
    """ArcFace (w600k_*: input.1 Nx3x112x112 -> 683 Nx512) or SFace (data -> fc1 Nx128)."""
    b = _Builder(seed)
    x = "input.1" if name == "arcface" else "data"
    feat = b.op("Relu", [b.conv(x, 3, 16, 8, 8, 0.05, 0.0)])  # N x 16 x 14 x 14
    flat = b.op("Flatten", [feat], axis=1)
    w = b.const(b.rng.standard_normal((16 * 14 * 14, dim)) * 0.02)
    out_name = "683" if name == "arcface" else "fc1"
    b.nodes.append(helper.make_node("MatMul", [flat, w], [out_name]))
    batch: Any = "N" if dynamic_batch else 1
    inp = helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, 3, 112, 112])
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, dim])
    return _save(helper.make_graph(b.nodes, name, [inp], [out], b.inits), path)


def manifest_for(path: Path, **fields: Any) -> dict[str, Any]:
    doc = {
        "version": "1",
        "format": "onnx",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "license": "test graph, random weights",
        "source": "tests/onnx_graphs.py",
        **fields,
    }
    return doc


def write_manifest(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path
