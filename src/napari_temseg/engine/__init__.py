"""Tiling, inference, pretraining and fine-tuning: pure torch/numpy, no Qt."""
