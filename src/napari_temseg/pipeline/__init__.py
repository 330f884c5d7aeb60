"""Files, batches, clusters and the demo: the layer between the engine and the two faces.

The engine turns arrays into arrays (pure torch/numpy); this package reads the files,
names the outputs, streams stacks and large frames to disk, runs batches (here or on a
dask cluster) and shows progress on a terminal. The CLI and the widgets call it; it never
imports them, and the engine never imports it.
"""
