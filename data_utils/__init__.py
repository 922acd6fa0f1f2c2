"""Data utilities: phantoms, NIfTI I/O and dataset loaders."""
