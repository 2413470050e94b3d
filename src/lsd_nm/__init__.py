"""lsd-nm: the experiments of "Local Shape Descriptors for Neuron Segmentation" (Sheridan et al., 2023)."""

from pathlib import Path

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository this package lives in (``src/lsd_nm`` → two levels up); every default path resolves from it."""
