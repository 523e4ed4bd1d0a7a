"""The face service of a kiosk (gate, self-checkout camera, desk), from its configuration."""

from __future__ import annotations

from biblioedge.agent.config import AgentConfig
from biblioedge.models.pipeline import FaceService


async def load_face(cfg: AgentConfig) -> FaceService:
    """The engine with the store's active models, warmed up: in a worker process unless
    ``face.process`` is off."""
    models = cfg.data_dir / "models"
    f = cfg.face
    if f.process:
        from biblioedge.models.worker import EngineSpec, FaceWorker

        spec = EngineSpec(models, f.intra_threads, f.inter_threads, f.optimization, f.detect_side)
        return await FaceWorker(spec, timeout_s=f.worker_timeout_s).start()
    from biblioedge.models.engine import AsyncFaceEngine, FaceEngine
    from biblioedge.models.onnx import RuntimeOptions
    from biblioedge.models.store import ModelStore

    options = RuntimeOptions(f.intra_threads, f.inter_threads, f.optimization)
    store = ModelStore(models)
    return await AsyncFaceEngine.load(
        lambda: FaceEngine(store, options=options, detect_side=f.detect_side)
    )
