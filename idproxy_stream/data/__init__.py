"""Datasets: the RecDataset shape, the synthetic generator and the MovieLens loaders."""
