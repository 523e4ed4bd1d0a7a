"""The face engine: model store, detectors, alignment, embedders, gallery. Pure compute + files."""
