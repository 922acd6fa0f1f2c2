"""The `Case` record shared by phantoms, loaders and the training code."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Case:
    """One imaging case: an image, its label map and where it sits in space.

    Arrays follow the NIfTI convention after canonical (RAS) reorientation: ``(X, Y)`` for 2D and
    ``(X, Y, Z)`` for 3D, with 2D slices taken along the last axis.

    Attributes:
        image: Float32 intensities, ``(X, Y)`` or ``(X, Y, Z)``.
        label: Integer label map (uint8) of the same shape, or ``None`` when the case is unlabelled.
        spacing: Voxel size in mm, one value per axis.
        case_id: A short identifier, unique within a data set.
        modality: For example ``"ct"``, ``"mri"`` or ``"mri_t2"``.
        affine: 4x4 voxel-to-world matrix (RAS, mm).
        task: ``"kidney"``, ``"heart"`` or ``""`` when unknown.

    Examples:
        >>> import numpy as np
        >>> c = Case(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8), (1.0, 1.0), "c0", "ct")
        >>> c.ndim
        2
    """

    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, ...]
    case_id: str
    modality: str
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    task: str = ""

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        if self.image.ndim not in (2, 3):
            raise ValueError(f"Case {self.case_id!r}: image must be 2D or 3D, got shape {self.image.shape}")
        if self.label is not None:
            self.label = np.asarray(self.label)
            if self.label.shape != self.image.shape:
                raise ValueError(
                    f"Case {self.case_id!r}: label shape {self.label.shape} does not match "
                    f"image shape {self.image.shape}"
                )
            self.label = self.label.astype(np.uint8, copy=False)
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) != self.image.ndim:
            raise ValueError(
                f"Case {self.case_id!r}: spacing {self.spacing} needs one value per image axis "
                f"({self.image.ndim})"
            )
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"Case {self.case_id!r}: affine must be 4x4, got {self.affine.shape}")

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return self.image.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape of the image."""
        return tuple(self.image.shape)
