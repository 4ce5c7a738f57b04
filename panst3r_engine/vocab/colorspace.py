"""sRGB -> CIELAB and the CIEDE2000 colour difference, in numpy.

CIELAB from sRGB (IEC 61966-2-1) through XYZ with the D65 white point. CIEDE2000 follows
G. Sharma, W. Wu, E. N. Dalal, "The CIEDE2000 color-difference formula: implementation notes,
supplementary test data, and mathematical observations", Color Research & Application 30(1), 2005,
equations (1)-(22), with k_L = k_C = k_H = 1; its Table 1 test pairs are in tests/vocab/test_colors.py.
"""

from __future__ import annotations

import numpy as np

_SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def srgb_to_lab(rgb8: np.ndarray) -> np.ndarray:
    """uint8-range sRGB [..., 3] -> float64 CIELAB [..., 3] (D65)."""
    c = np.asarray(rgb8, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    delta = 6.0 / 29.0
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4.0 / 29.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 difference of CIELAB colours [..., 3] and [..., 3] (broadcast) -> float64 [...]."""
    lab1, lab2 = np.asarray(lab1, dtype=np.float64), np.asarray(lab2, dtype=np.float64)
    L1, a1, b1 = np.moveaxis(lab1, -1, 0)
    L2, a2, b2 = np.moveaxis(lab2, -1, 0)
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2.0
    g = 0.5 * (1.0 - np.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)))  # (4)
    a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2  # (5)
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)  # (6)
    h1p = np.where((a1p == 0) & (b1 == 0), 0.0, np.degrees(np.arctan2(b1, a1p)) % 360.0)  # (7)
    h2p = np.where((a2p == 0) & (b2 == 0), 0.0, np.degrees(np.arctan2(b2, a2p)) % 360.0)
    dLp, dCp = L2 - L1, c2p - c1p  # (8), (9)
    chroma_product = c1p * c2p
    dh = h2p - h1p
    dhp = np.where(chroma_product == 0, 0.0, np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh)))  # (10)
    dHp = 2.0 * np.sqrt(chroma_product) * np.sin(np.radians(dhp) / 2.0)  # (11)
    Lp_bar, Cp_bar = (L1 + L2) / 2.0, (c1p + c2p) / 2.0  # (12), (13)
    h_sum = h1p + h2p
    hp_bar = np.where(
        chroma_product == 0,
        h_sum,
        np.where(
            np.abs(h1p - h2p) <= 180, h_sum / 2.0, np.where(h_sum < 360, (h_sum + 360) / 2.0, (h_sum - 360) / 2.0)
        ),
    )  # (14)
    t = (
        1.0
        - 0.17 * np.cos(np.radians(hp_bar - 30))
        + 0.24 * np.cos(np.radians(2 * hp_bar))
        + 0.32 * np.cos(np.radians(3 * hp_bar + 6))
        - 0.20 * np.cos(np.radians(4 * hp_bar - 63))
    )  # (15)
    d_theta = 30.0 * np.exp(-(((hp_bar - 275.0) / 25.0) ** 2))  # (16)
    r_c = 2.0 * np.sqrt(Cp_bar**7 / (Cp_bar**7 + 25.0**7))  # (17)
    s_l = 1.0 + 0.015 * (Lp_bar - 50.0) ** 2 / np.sqrt(20.0 + (Lp_bar - 50.0) ** 2)  # (18)
    s_c = 1.0 + 0.045 * Cp_bar  # (19)
    s_h = 1.0 + 0.015 * Cp_bar * t  # (20)
    r_t = -np.sin(np.radians(2.0 * d_theta)) * r_c  # (21)
    dl, dc, dh_ = dLp / s_l, dCp / s_c, dHp / s_h
    return np.sqrt(dl**2 + dc**2 + dh_**2 + r_t * dc * dh_)  # (22)
