"""Readers and writers: microscope files <-> numpy/dask arrays + calibration. No Qt."""
