"""The face engine's exceptions: callers (agent flows, CLI) translate them with ``raise … from``."""


class FaceEngineError(RuntimeError):
    """Base of everything the face engine raises on purpose."""


class ImageError(FaceEngineError, ValueError):
    """The image cannot be used (empty, wrong depth, too large, undecodable)."""


class ModelLoadError(FaceEngineError):
    """A model file could not be loaded, or does not behave as its manifest says."""


class GalleryError(FaceEngineError, KeyError):
    """A gallery operation named an identity or shape the gallery does not have."""
