"""Five-point alignment to the 112x112 ArcFace template (insightface's ``norm_crop``).

The similarity transform is the least-squares one of Umeyama (1991), the same estimate
scikit-image's ``SimilarityTransform`` makes, so crops match insightface's to rounding.
"""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from biblioedge.models.image import Image

#: Landmark targets in a 112x112 crop: left eye, right eye, nose, left and right mouth corner.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

F64 = npt.NDArray[np.float64]


def similarity_transform(src: npt.ArrayLike, dst: npt.ArrayLike) -> F64:
    """The 2x3 matrix of the rotation+uniform scale+translation taking src onto dst."""
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 2 or len(s) < 2:
        raise ValueError(f"need matching Nx2 point sets, got {s.shape} and {d.shape}")
    n = len(s)
    s_mean, d_mean = s.mean(axis=0), d.mean(axis=0)
    s_c, d_c = s - s_mean, d - d_mean
    cov = d_c.T @ s_c / n
    sign = np.eye(2)
    if np.linalg.det(cov) < 0:
        sign[1, 1] = -1
    u, sv, vt = np.linalg.svd(cov)
    rank = np.linalg.matrix_rank(cov)
    if rank == 0:
        raise ValueError("degenerate landmarks (all points coincide)")
    if rank == 1:
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            rot = u @ vt
        else:
            k = sign[1, 1]
            sign[1, 1] = -1
            rot = u @ sign @ vt
            sign[1, 1] = k
    else:
        rot = u @ sign @ vt
    var = s_c.var(axis=0).sum()
    scale = float(np.sum(sv * np.diag(sign))) / var
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = d_mean - scale * rot @ s_mean
    return m


def norm_crop(image: Image, landmarks: npt.ArrayLike, size: int = 112) -> Image:
    """The aligned face crop an ArcFace/SFace embedder expects."""
    if size % 112 != 0:
        raise ValueError("size must be a multiple of 112")
    m = similarity_transform(landmarks, ARCFACE_TEMPLATE * (size / 112.0))
    return cast(Image, cv2.warpAffine(image, m, (size, size), borderValue=0.0))
