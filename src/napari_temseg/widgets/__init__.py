"""Thin napari dock widgets over the engine."""
