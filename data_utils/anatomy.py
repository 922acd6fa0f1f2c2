"""Anatomy of the synthetic phantoms: a canvas of warped patient coordinates and the organs painted on it.

A :class:`Canvas` holds a structure-index map over patient coordinates in millimetres, warped by a smooth
random displacement field, and paints superquadrics, tubes and capsules into it in anatomical order.
:func:`build_abdomen` (kidney task) and :func:`build_thorax` (heart task) draw one subject's body habitus,
organ sizes, positions and orientations from a random generator. :data:`STRUCTURES` names the structures of
each task, in painting order, with their tissue (:mod:`data_utils.tissues`) and label.
:mod:`data_utils.phantoms` renders the painted map as CT or MR images.

Axes: X towards the patient's right, Y towards anterior, Z towards superior (RAS); the origin is the centre
of the field of view.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["INF", "STRUCTURES", "Canvas", "build_abdomen", "build_thorax"]

INF = np.inf

# Structures in painting order of their first use: name -> (tissue, label). Index 0 is outside the body.
_COMMON = {"outside": ("air", 0), "table": ("table", 0), "subcutaneous_fat": ("fat", 0),
           "muscle": ("muscle", 0), "bone": ("bone", 0), "marrow": ("marrow", 0), "disc": ("disc", 0),
           "spinal_canal": ("fluid", 0), "cord": ("cord", 0), "gas": ("air", 0), "liver": ("liver", 0)}
STRUCTURES: dict[str, dict[str, tuple[str, int]]] = {
    "kidney": {**_COMMON, "visceral_fat": ("fat", 0), "aorta": ("blood", 0), "vein": ("blood_venous", 0),
               "gallbladder": ("fluid", 0), "spleen": ("spleen", 0), "pancreas": ("pancreas", 0),
               "mesentery": ("fat", 0), "bowel_wall": ("bowel_wall", 0),
               "bowel_content": ("bowel_content", 0), "perirenal_fat": ("fat", 0), "renal_sinus": ("fat", 0),
               "kidney_cortex": ("kidney_cortex", 1), "kidney_medulla": ("kidney_medulla", 1),
               "renal_pelvis": ("fluid", 1)},
    "heart": {**_COMMON, "lung": ("lung", 0), "mediastinal_fat": ("fat", 0), "esophagus": ("muscle", 0),
              "vessel": ("blood_venous", 0), "vena_cava": ("blood_venous", 0),
              "right_heart": ("blood_venous", 0), "rv_wall": ("myocardium", 0),
              "pulmonary_artery": ("blood_venous", 0), "descending_aorta": ("blood", 0),
              "MYO": ("myocardium", 1), "LAC": ("blood", 2), "LVC": ("blood", 3), "AA": ("blood", 4)},
}


# ---------------------------------------------------------------------------------------------- geometry
def _rot(axis: int, angle: float) -> np.ndarray:
    """Rotation matrix about world axis 0 (x), 1 (y) or 2 (z)."""
    c, s = np.cos(angle), np.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


class Canvas:
    """A structure-index map being painted, over warped patient coordinates ``q`` (mm) of every voxel.

    Each painting method overwrites the voxels it covers, or only those of the structures ``only``, so the
    anatomy is painted from the outside in. Voxel centres are placed symmetrically about the origin.

    Args:
        names: Structure names; a voxel's value in ``ids`` is the index of its structure.
        shape: Grid shape ``(X, Y, Z)``; ``Z = 1`` for one axial plane.
        spacing: Voxel size per axis (mm).
        z_plane: z (mm) of the first plane instead of the symmetric placement (one plane through the organs
            of interest in 2D), or ``None``.
        rng: Generator of the patient's slight rotation on the table and of the displacement field.

    Attributes:
        ids: The uint8 structure map, all 0 (the first name) to start with.
        q: Warped x, y and z (mm) of every voxel, one float32 array per axis.
        index: Structure name -> value in ``ids``.
        table_frame: Rotation of the patient on the table, for the couch.
        blob, lumps: Unit-variance noise set by the caller: fine blobs (vessels, gas) and coarse lumps
            (bowel loops).
    """

    def __init__(self, names: Sequence[str], shape: tuple[int, int, int], spacing: Sequence[float],
                 z_plane: float | None, rng: np.random.Generator) -> None:
        self.index = {n: i for i, n in enumerate(names)}
        self.shape, self.step = shape, list(spacing)
        self.start = [(0.5 - n / 2) * s for n, s in zip(shape, spacing)]  # first voxel centre, mm
        if z_plane is not None:
            self.start[2] = z_plane
        x, y, z = np.ix_(*[(a0 + np.arange(n) * s).astype(np.float32)
                           for a0, n, s in zip(self.start, shape, self.step)])
        angle = rng.uniform(-0.08, 0.08)  # the patient lies slightly rotated on the table
        self.cos, self.sin, self.table_frame = np.cos(angle), np.sin(angle), _rot(2, angle)
        full = np.zeros(shape, np.float32)
        self.q = [full + (np.float32(self.cos) * x - np.float32(self.sin) * y),
                  full + (np.float32(self.sin) * x + np.float32(self.cos) * y), full + z]
        self.margin = np.zeros(3)
        for _ in range(4):  # smooth displacement: products of long-wavelength cosines
            waves = [np.cos(2 * np.pi * a / rng.uniform(120, 400) + rng.uniform(0, 2 * np.pi))
                     for a in (x, y, z)]
            mode, amp = waves[0] * waves[1] * waves[2], rng.uniform(-3.0, 3.0, 3)
            for k in range(3):
                self.q[k] += np.float32(amp[k]) * mode
            self.margin += np.abs(amp)
        self.ids = np.zeros(shape, np.uint8)
        # unit-variance noise set by the caller: fine blobs (vessels, gas) and coarse lumps (bowel loops)
        self.blob: np.ndarray = full
        self.lumps: np.ndarray = full

    def _box(self, center: Sequence[float], reach: Sequence[float]) -> tuple[slice, ...] | None:
        """Voxel slices that hold every point whose warped coordinates are within ``reach`` of ``center``."""
        c, s = self.cos, self.sin
        mid = (c * center[0] + s * center[1], -s * center[0] + c * center[1], center[2])
        reach = (c * reach[0] + abs(s) * reach[1], abs(s) * reach[0] + c * reach[1], reach[2])
        box = []
        for m0, r, m, a0, step, n in zip(mid, reach, self.margin, self.start, self.step, self.shape):
            lo, hi = (m0 - r - m - a0) / step, (m0 + r + m - a0) / step
            lo = int(np.ceil(lo)) if lo > 0 else 0
            hi = int(np.floor(hi)) + 1 if hi < n else n
            if lo >= hi:
                return None
            box.append(slice(lo, hi))
        return tuple(box)

    def _paint(self, name: str, box: tuple[slice, ...], inside: np.ndarray,
               only: Sequence[str] | None) -> None:
        view = self.ids[box]
        if only is not None:
            allowed = np.zeros(256, bool)
            allowed[[self.index[n] for n in only if n in self.index]] = True
            inside &= allowed[view]
        view[inside] = self.index[name]

    def ellipsoid(self, name: str, center: Sequence[float], radii: Sequence[float], *,
                  frame: np.ndarray | None = None, square: float = 0.0, back: float | None = None,
                  cut: tuple[int, float, float] | None = None, where: Callable[..., np.ndarray] | None = None,
                  only: Sequence[str] | None = None) -> tuple[slice, ...] | None:
        """Points with ``x^2 + y^2 - square x^2 y^2 + z^2 < 1``, ``(x, y, z) = local / radii``.

        ``frame`` holds the local axes as columns; ``square`` in [0, 1) goes from an ellipse to a rectangle
        in the first two axes; ``back`` is a different radius on the negative second axis; an infinite third
        radius gives a tube; ``cut = (axis, lo, hi)`` keeps ``lo <= local[axis] <= hi``; ``where(u, v, w)`` is
        an extra mask on local coordinates. Returns the voxel box that was examined (None if empty).
        """
        rx, ry, rz = radii
        axes = np.array([rx, max(ry, back or 0), rz])
        if frame is not None:  # bounding box of the rotated ellipsoid (infinite where a tube axis leans in)
            spread = np.abs(frame) * np.where(frame == 0, 0.0, axes)
            axes = np.sqrt((spread**2).sum(axis=1))
        box = self._box(center, axes)
        if box is None:
            return None
        u = [qk[box] - np.float32(ck) for qk, ck in zip(self.q, center)]
        if frame is not None:  # local coordinates; terms with a zero coefficient are skipped
            u = [sum(u[j] * np.float32(frame[j, i]) for j in range(3) if frame[j, i] != 0) for i in range(3)]
        x2 = (u[0] * np.float32(1 / rx)) ** 2
        inv_y = np.float32(1 / ry)
        if back is not None:
            inv_y = np.where(u[1] >= 0, inv_y, np.float32(1 / back))
        y2 = (u[1] * inv_y) ** 2
        f = x2 + y2 - np.float32(square) * x2 * y2 if square else x2 + y2
        if np.isfinite(rz):
            f += (u[2] * np.float32(1 / rz)) ** 2
        inside = f < 1
        if cut is not None:
            inside &= (u[cut[0]] >= cut[1]) & (u[cut[0]] <= cut[2])
        if where is not None:
            inside &= where(*u)
        self._paint(name, box, inside, only)
        return box

    def capsule(self, name: str, a: Sequence[float], b: Sequence[float], radius: float, *,
                only: Sequence[str] | None = None) -> None:
        """Points within ``radius`` of the segment from ``a`` to ``b``."""
        a, ab = np.asarray(a, float), np.asarray(b, float) - np.asarray(a, float)
        box = self._box(a + ab / 2, np.abs(ab) / 2 + radius)
        if box is None:
            return
        d = [qk[box] - np.float32(ak) for qk, ak in zip(self.q, a)]
        t = np.clip(sum(d[k] * np.float32(ab[k] / max(ab @ ab, 1e-9)) for k in range(3)), 0, 1)
        dist2 = sum((d[k] - t * np.float32(ab[k])) ** 2 for k in range(3))
        self._paint(name, box, dist2 < radius**2, only)

    def oval(self, name: str, yc: float, width: float, front: float, back: float, *, square: float,
             where: Callable[..., np.ndarray] | None = None, only: Sequence[str] | None = None) -> None:
        """Body cross-section along z: half-width ``width``, ``front`` and ``back`` reach from ``yc``."""
        self.ellipsoid(name, (0, yc, 0), (width, front, INF), square=square, back=back, where=where,
                       only=only)

    def sprinkle(self, name: str, field: np.ndarray, lo: float = -INF, hi: float = INF, *,
                 only: Sequence[str], box: tuple[slice, ...] | None = None) -> None:
        """Paint ``name`` where ``lo < field < hi`` inside the structures ``only`` (within ``box``)."""
        box = (slice(None),) * 3 if box is None else box
        self._paint(name, box, (field[box] > lo) & (field[box] < hi), only)


# ---------------------------------------------------------------------------------------------- anatomy
def _body(cv: Canvas, r: np.random.Generator, *, width: tuple[float, float], front: tuple[float, float],
          back: tuple[float, float]) -> tuple[float, tuple[float, float, float, float], float]:
    """Couch, subcutaneous fat and muscle wall; returns (yc, inner oval (w, front, back, square), yb)."""
    u = r.uniform
    w, fr, bk, yc, p = u(*width), u(*front), u(*back), u(-8, 8), u(0.0, 0.4)
    fat, wall = u(4, 32), u(9, 14)
    fw, ff, fb = fat * u(0.8, 1.1), fat * u(1.0, 1.4), fat * u(0.4, 0.7)
    cv.ellipsoid("table", (0, yc - bk - 10, 0), (260, 4, INF), frame=cv.table_frame, square=0.95)
    cv.oval("subcutaneous_fat", yc, w, fr, bk, square=p)
    cv.oval("muscle", yc, w - fw, fr - ff, bk - fb, square=p)
    inner = (w - fw - wall, fr - ff - wall, bk - fb - wall, p)
    return yc, inner, yc - inner[2] + u(40, 50)  # yb: centre of the vertebral body


def _spine(cv: Canvas, r: np.random.Generator, yb: float) -> float:
    """Vertebral body with discs, posterior arch, canal and cord; returns the body's AP half-depth."""
    u = r.uniform
    period, disc, phase = u(28, 34), u(6, 9), u(0, 40)
    rx, ry = u(18, 23), u(14, 18)
    level = lambda a, b, w: np.mod(w - phase, period) < disc  # disc levels along z
    arch = lambda a, b, w: np.mod(w - phase, period) > disc + 3
    yc = yb - ry - u(8, 11)
    for s in (-1, 1):  # erector spinae
        cv.ellipsoid("muscle", (s * u(28, 35), yc - 12, 0), (u(22, 27), u(20, 25), INF),
                     only=("muscle", "visceral_fat", "lung"))
    cv.ellipsoid("bone", (0, yc + 3, 0), (rx + u(18, 26), 5, INF), where=arch)  # transverse processes
    cv.ellipsoid("bone", (0, yc - 20, 0), (5, 16, INF), where=arch)  # spinous process
    cv.ellipsoid("bone", (0, yb, 0), (rx, ry, INF))
    cv.ellipsoid("marrow", (0, yb, 0), (rx - 2.5, ry - 2.5, INF))
    cv.ellipsoid("disc", (0, yb, 0), (rx, ry, INF), where=level)
    cv.ellipsoid("bone", (0, yc - 1, 0), (14, 13, INF))
    cv.ellipsoid("spinal_canal", (0, yc, 0), (9, 7.5, INF))
    cv.ellipsoid("cord", (0, yc, 0), (4.5, 4, INF))
    return ry


def _ribs(cv: Canvas, r: np.random.Generator, yc: float, inner: tuple[float, float, float, float],
          wall: float, *, zmin: float = -INF, ymax: float = INF) -> None:
    """Rib arcs in the muscle wall; ribs run downwards towards the front (z + slope * y is constant)."""
    period, slope, phase = r.uniform(30, 38), r.uniform(0.3, 0.6), r.uniform(0, 40)

    def band(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
        rib = np.cos(2 * np.pi * (w + slope * (b + yc) - phase) / period) > 0.55
        return rib & (w > zmin) & (b + yc < ymax)

    w, fr, bk, p = inner
    g = 0.7 * wall  # the ribs take the outer part of the wall, intercostal muscle the inner part
    cv.oval("bone", yc, w + g, fr + g, bk + g, square=p, where=band, only=("muscle",))
    g = 0.2 * wall
    cv.oval("muscle", yc, w + g, fr + g, bk + g, square=p, only=("bone",))


def _kidney(cv: Canvas, r: np.random.Generator, side: int, z: float, yb: float, pad: float,
            aorta: np.ndarray, ivc: np.ndarray) -> None:
    """One kidney (side +1 right, -1 left): cortex, medullary pyramids, sinus fat, pelvis, renal vessels."""
    u = r.uniform
    ra, rb, rc = u(23, 29), u(18, 23), u(45, 58)  # towards the hilum, front-back, along the long axis
    c = np.array([side * u(66, 80), yb + u(-12, 2), z])
    # local axes: hilum medial and turned forwards; upper pole tilted medially and backwards
    frame = np.diag([-side, 1.0, 1.0]) @ _rot(2, u(0.25, 0.6)) @ _rot(1, u(0.1, 0.3))
    frame = frame @ _rot(0, u(0.1, 0.25))
    soft = ("visceral_fat", "liver", "spleen", "perirenal_fat", "muscle")
    cv.ellipsoid("perirenal_fat", c, (ra + pad, rb + pad, rc + 1.5 * pad), frame=frame, only=soft)
    cv.ellipsoid("kidney_cortex", c, (ra, rb, rc), frame=frame, only=soft)
    lobes, turn = r.integers(5, 8), u(0, np.pi)
    pyramids = lambda a, b, w: np.cos(lobes * np.arctan2(w / rc, a / ra) + turn) > -0.2
    cv.ellipsoid("kidney_medulla", c, (0.72 * ra, 0.66 * rb, 0.8 * rc), frame=frame, where=pyramids,
                 only=("kidney_cortex",))
    cv.ellipsoid("renal_sinus", c + frame @ (0.65 * ra, 0, 0), (0.42 * ra, 0.4 * rb, 0.45 * rc),
                 frame=frame, only=("kidney_cortex", "kidney_medulla", "perirenal_fat"))
    cv.ellipsoid("renal_pelvis", c + frame @ (0.4 * ra, 0, -0.1 * rc), (0.32 * ra, 0.3 * rb, 0.3 * rc),
                 frame=frame, only=("renal_sinus",))
    hilum, around = c + frame @ (0.95 * ra, 0, 0), ("visceral_fat", "perirenal_fat", "renal_sinus")
    cross = [aorta[0], aorta[1] + 16, z] if side < 0 else hilum  # the left vein passes in front of the aorta
    cv.capsule("vein", hilum, cross, 5.0, only=around)
    cv.capsule("vein", cross, [ivc[0], ivc[1], z], 5.0, only=around)
    artery_end = c + frame @ (0.95 * ra, -0.3 * rb, 0)
    cv.capsule("aorta", [aorta[0], aorta[1], z + 8], artery_end, 3.0, only=around)


def build_abdomen(r: np.random.Generator, canvas_at: Callable[[float], Canvas]) -> Canvas:
    """Abdomen at the renal hilum: body wall, spine, vessels, liver, spleen, pancreas, bowel, kidneys.

    Args:
        r: Generator of the subject's anatomy (the structures of ``STRUCTURES["kidney"]``).
        canvas_at: Makes the canvas, given the z (mm) of the 2D plane; called once, before anything is
            painted, with the plane between the two kidneys.

    Returns:
        The painted canvas.
    """
    u = r.uniform
    z_left = u(-15, 15)
    z_right = z_left - u(8, 25)  # the right kidney sits lower, under the liver
    cv = canvas_at((z_left + z_right) / 2 + u(-6, 6))
    yc, inner, yb = _body(cv, r, width=(118, 150), front=(95, 120), back=(85, 105))
    visc = u(0, 1)  # visceral fat: perirenal fat pads, fewer bowel loops
    cv.oval("visceral_fat", yc, *inner[:3], square=inner[3])
    for s in (-1, 1):
        cv.ellipsoid("muscle", (s * u(55, 65), yb - 22, 0), (u(14, 20), u(9, 12), INF))  # quadratus lumborum
        cv.ellipsoid("muscle", (s * u(34, 42), yb + 2, 0), (u(12, 19), u(11, 16), INF))  # psoas
    _ribs(cv, r, yc, inner, 12.0, zmin=z_left + u(-10, 30), ymax=yb + 40)
    ry = _spine(cv, r, yb)
    aorta, ivc = np.array([-u(8, 18), yb + ry + u(11, 15)]), np.array([u(18, 28), yb + ry + u(12, 18)])
    cv.ellipsoid("aorta", (*aorta, 0), (u(9, 12), u(9, 12), INF))
    cv.ellipsoid("vein", (*ivc, 0), (u(10, 14), u(7, 10), INF))
    for x, dy, rad in ((-2, 22, 4), (12, 24, 5)):  # superior mesenteric artery and vein
        cv.ellipsoid("aorta" if x < 0 else "vein", (aorta[0] + x, aorta[1] + dy, 0), (rad, rad, INF))
    box = cv.ellipsoid("liver", (u(65, 85), yb + u(40, 60), z_right + u(60, 80)),
                       (u(60, 80), u(70, 90), u(65, 85)), frame=_rot(2, u(-0.3, 0.3)), square=u(0.0, 0.4),
                       only=("visceral_fat",))
    cv.sprinkle("vein", cv.blob, u(1.8, 2.2), only=("liver",), box=box)  # portal and hepatic vein branches
    if u() < 0.7:
        cv.ellipsoid("gallbladder", (u(30, 50), yb + u(75, 95), z_right + u(10, 40)),
                     (u(12, 18), u(14, 20), 30), only=("liver", "visceral_fat"))
    cv.ellipsoid("spleen", (-u(75, 92), yb + u(-5, 20), z_left + u(30, 55)),
                 (u(18, 26), u(45, 60), u(40, 55)), frame=_rot(2, u(0.3, 0.7)), only=("visceral_fat",))
    for side, z in ((1, z_right), (-1, z_left)):
        _kidney(cv, r, side, z, yb, u(1, 4) + 12 * visc, aorta, ivc)
    zp = z_left + u(0, 20)  # pancreas: head, body and tail
    head, body = (u(15, 30), yb + u(45, 60), zp - 10), (-u(0, 10), yb + u(55, 70), zp)
    for a, b in ((head, body), (body, (-u(55, 75), yb + u(25, 45), zp + 15))):
        cv.capsule("pancreas", a, b, u(9, 13), only=("visceral_fat",))
    _bowel(cv, r, yb, yc + inner[1], visc)
    return cv


def _bowel(cv: Canvas, r: np.random.Generator, yb: float, front: float, visc: float) -> None:
    """Colon, small-bowel loops and stomach: a wall, mottled content and gas."""
    u = r.uniform
    zt = u(-10, 60)
    colon = [  # ascending, descending and transverse
        ((u(70, 95), yb + u(20, 50), -200), (u(70, 95), yb + u(20, 50), zt), u(18, 25)),
        ((-u(70, 95), yb + u(10, 40), -200), (-u(70, 95), yb + u(10, 40), 200), u(14, 20)),
        ((u(60, 90), front - u(25, 40), zt), (-u(60, 90), front - u(25, 40), zt + u(0, 30)), u(16, 22)),
    ]
    for a, b, rad in colon:
        cv.capsule("bowel_wall", a, b, rad, only=("visceral_fat",))
        cv.capsule("bowel_content", a, b, rad - 2.5, only=("bowel_wall",))
    c, radii = (-u(35, 60), yb + u(70, 95), u(70, 100)), np.array([u(35, 50), u(30, 40), u(40, 55)])
    cv.ellipsoid("bowel_wall", c, radii, only=("visceral_fat",))  # stomach, with an air-fluid level
    cv.ellipsoid("bowel_content", c, radii - 4, only=("bowel_wall",))
    cv.ellipsoid("gas", c, radii - 4, cut=(1, u(0.2, 0.7) * radii[1], INF), only=("bowel_content",))
    # small bowel: lumps of the coarse noise in the mesentery, walls where the noise crosses a level
    level = u(-0.6, -0.1) + 0.6 * visc
    box = cv.ellipsoid("mesentery", (u(-15, 15), (yb + 30 + front) / 2, u(-60, -20)),
                       (u(80, 100), (front - yb - 30) / 2, u(120, 160)), only=("visceral_fat",))
    if box is not None:
        cv.sprinkle("visceral_fat", cv.lumps, hi=level, only=("mesentery",), box=box)
        cv.sprinkle("bowel_content", cv.lumps, level + 0.3, only=("mesentery",), box=box)
        cv.sprinkle("bowel_wall", cv.lumps, level, only=("mesentery",), box=box)
    cv.sprinkle("gas", cv.blob, u(0.8, 1.6), only=("bowel_content",))


def build_thorax(r: np.random.Generator, canvas_at: Callable[[float], Canvas]) -> Canvas:
    """Thorax at the cardiac base: chest wall, lungs, spine, the four chambers, aorta and pulmonary artery.

    Args:
        r: Generator of the subject's anatomy (the structures of ``STRUCTURES["heart"]``).
        canvas_at: Makes the canvas, given the z (mm) of the 2D plane; called once, before anything is
            painted, with the plane just above the left-ventricular base.

    Returns:
        The painted canvas.
    """
    u = r.uniform
    base_z = u(-5, 20)  # LV base (mitral annulus); the 2D plane passes just above it
    cv = canvas_at(base_z + u(-4, 6))
    yc, inner, yb = _body(cv, r, width=(125, 150), front=(112, 132), back=(100, 115))
    for s in (-1, 1):  # pectoralis major
        cv.ellipsoid("muscle", (s * u(45, 70), yc + inner[1] + 18, 0), (u(40, 55), u(7, 14), INF),
                     only=("subcutaneous_fat",))
    _ribs(cv, r, yc, inner, 14.0, ymax=yc + 0.5 * inner[1])
    cv.oval("lung", yc, *inner[:3], square=inner[3])
    ry = _spine(cv, r, yb)
    sternum = (0, yc + inner[1] + 7, 0)
    cv.ellipsoid("bone", sternum, (u(12, 16), 7, INF))
    cv.ellipsoid("marrow", sternum, (9, 4.5, INF))

    # Heart frame: the LV long axis points from the base to the apex, forwards, left and down.
    az, el = u(0.85, 1.2), u(0.35, 0.7)
    n = np.array([-np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), -np.sin(el)])
    e1 = np.cross(n, (0, 0, 1.0))
    e1 /= np.linalg.norm(e1)
    lv_frame = np.stack([e1, np.cross(n, e1), n], axis=1)  # e1 points to the right ventricle
    la_r = np.array([u(26, 34), u(15, 19), u(20, 26)])
    la = np.array([u(-10, 5), yb + ry + u(20, 26) + la_r[1], base_z + u(8, 16)])
    base = np.array([la[0] - u(0, 12), la[1] + u(18, 26), base_z])
    rc, length, wall = u(20, 26), u(36, 46), u(8, 12)
    lv = base + n * 0.55 * length
    rv = lv + lv_frame @ (rc + 0.5 * wall + u(2, 10), u(-5, 5), u(-0.1, 0.1) * length)
    rv_r = np.array([u(14, 20), rc + u(8, 14), length * u(0.8, 0.95)])
    ra = la + (u(35, 45), u(5, 15), u(-15, -5))
    root = base + (u(8, 16), u(2, 12), u(-2, 6))
    pa0 = root + (-u(18, 26), u(14, 22), u(4, 12))
    pa1 = pa0 + (-u(5, 15), -u(25, 35), u(30, 40))
    cut = (2, -0.55 * length, INF)
    parts = [  # painting order; each part is first drawn enlarged as mediastinal (epicardial) fat
        ("e", "right_heart", ra, (u(22, 28), u(18, 24), u(24, 30)), None, None),
        ("c", "vena_cava", ra + (0, 0, 15), ra + (u(0, 10), -u(0, 10), 220), u(9, 12)),
        ("c", "vena_cava", ra, ra + (u(-10, 0), -u(5, 15), -220), u(11, 14)),
        ("e", "rv_wall", rv, rv_r + 4, lv_frame, None),
        ("e", "right_heart", rv, rv_r, lv_frame, None),
        ("c", "right_heart", rv, pa0, u(11, 14)),
        ("c", "pulmonary_artery", pa0, pa1, u(12, 15)),
        ("c", "pulmonary_artery", pa1, (root[0] + u(45, 60), pa1[1] - u(5, 15), pa1[2] - u(0, 10)), u(8, 11)),
        ("c", "pulmonary_artery", pa1, pa1 + (-u(35, 50), -u(15, 25), u(0, 8)), u(8, 11)),
        ("e", "LAC", la, la_r, _rot(2, u(-0.3, 0.3)), None),
        ("c", "AA", root, root + (u(0, 15), u(-15, 0), 220), u(12, 16)),
        ("e", "MYO", lv, (rc + wall, (rc + wall) * u(0.92, 1.0), length + 0.8 * wall), lv_frame, cut),
        ("e", "LVC", lv, (rc, rc * u(0.9, 1.0), length), lv_frame, cut),
    ]
    heart = ("lung", "mediastinal_fat", *dict.fromkeys(p[1] for p in parts))
    for grow, only in ((u(3, 12), ("lung",)), (0.0, heart)):
        for kind, name, *g in parts:
            name = "mediastinal_fat" if grow else name
            if kind == "c":
                cv.capsule(name, g[0], g[1], g[2] + grow, only=only)
                continue
            center, radii, frame, cut_ = g
            cut_ = None if cut_ is None else (cut_[0], cut_[1] - grow, cut_[2])
            cv.ellipsoid(name, center, np.add(radii, grow), frame=frame, cut=cut_, only=only)
    aorta = np.array([-u(18, 26), yb + u(5, 15), 0])
    esophagus = np.array([u(-4, 6), yb + ry + u(8, 12), 0])
    cv.ellipsoid("mediastinal_fat", esophagus, (u(15, 25), u(12, 16), INF), only=("lung",))
    cv.ellipsoid("mediastinal_fat", aorta, (u(14, 18), u(14, 18), INF), only=("lung",))
    cv.ellipsoid("descending_aorta", aorta, (u(10, 13), u(10, 13), INF))
    cv.ellipsoid("esophagus", esophagus, (u(7, 10), u(5, 8), INF))
    if u() < 0.5:
        cv.ellipsoid("gas", esophagus, (2.5, 2.0, INF))
    cv.ellipsoid("liver", (u(30, 60), yb + u(40, 70), base_z - u(150, 175)),
                 (u(95, 115), u(80, 100), u(100, 120)), only=("lung", "mediastinal_fat"))
    cv.sprinkle("vessel", cv.blob, u(1.7, 2.1), only=("lung",))  # pulmonary vessels
    return cv

