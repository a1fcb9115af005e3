"""How the sample explorer moves a sample's small 8-bit thumbnail by an exact image action, element by element (no torch).

The page's script (templates/explore.js) applies, per element, a list of pixel steps to the embedded
untransformed thumbnail ``x_small``; the first step acts first. A step is

- ``["d", k, f, axis]``: the dihedral map rot90^k o flip^f (the flip acts first; axis ``h`` mirrors
  left-right, ``v`` top-bottom), counter-clockwise as displayed, as eqaudit.symmetries.images does it;
- ``["s", dx, dy, wrap]``: an integer shift right and down in thumbnail pixels, wrapping around
  (``wrap`` true) or filling with zeros;
- ``["r", angle, factor]``: a resampled turn by ``angle`` degrees (counter-clockwise as displayed) and zoom by
  ``factor`` about the centre, zeros outside, drawn with a canvas transform: approximate (bilinear in the
  browser, on the small thumbnail), for the angles of ``rotate`` that are not exact and the factors of ``scale``.

Only the exact image symmetries are moved (rot90, rot180, flip, d4, translate and products of them; swap,
which exchanges the frames of a two-frame input, leaves its thumbnail, the mean of the channels, as it is);
a shift that is not a whole number of thumbnail pixels (the thumbnail is smaller than the input) has no
steps (None) and the page says so. ``rotate`` moves exactly (dihedral steps) at multiples of 90 degrees (180 on
a non-square thumbnail) and by a resampled step otherwise; ``scale`` by a resampled step.
"""

from __future__ import annotations

from typing import Any

from ..symmetries.catalogue import split_spec

Step = list[Any]
WIDTHS = {"rot90": 1, "rot180": 1, "flip": 1, "d4": 2, "translate": 2, "swap": 1, "rotate": 1, "scale": 1}  # element parameters per factor


def _factor_steps(name: str, params: dict[str, str], row: list[float], scale: tuple[float, float],
                  square: bool = True) -> list[Step] | None:
    """The steps of one factor's element ``row``; None where this thumbnail cannot show it exactly."""
    if name == "rotate":  # degrees, counter-clockwise as displayed (eqaudit.symmetries.images.Rotate)
        period = 90.0 if square else 180.0
        q = row[0] / period
        if abs(q - round(q)) * period <= 1e-6:
            return [["d", int(round(q)) * int(period // 90) % 4, 0, "h"]]
        return [["r", row[0], 1.0]]
    if name == "scale":  # log2 of the zoom factor
        return [] if abs(row[0]) <= 1e-12 else [["r", 0.0, 2.0 ** row[0]]]
    if name == "rot90":
        return [["d", int(round(row[0])) % 4, 0, "h"]]
    if name == "rot180":
        return [["d", 2 * (int(round(row[0])) % 2), 0, "h"]]
    if name == "flip":
        return [["d", 0, int(round(row[0])) % 2, params.get("axis", "h")]]
    if name == "d4":
        return [["d", int(round(row[0])) % 4, int(round(row[1])) % 2, "h"]]
    if name == "swap":  # exchanges the frames of a two-frame input: its thumbnail, the mean of the channels, stays
        return []
    if name == "translate":
        dx, dy = row[0] * scale[1], row[1] * scale[0]
        if abs(dx - round(dx)) > 1e-9 or abs(dy - round(dy)) > 1e-9:
            return None
        return [["s", int(round(dx)), int(round(dy)), params.get("mode", "circular") == "circular"]]
    return None


def element_steps(spec: str, elements: list[list[float]], full_hw: tuple[int, int],
                  small_hw: tuple[int, int]) -> list[list[Step] | None] | None:
    """Per element the steps that move a ``small_hw`` thumbnail of a ``full_hw`` input as the symmetry
    ``spec`` moves the input (None for an element this thumbnail cannot show exactly); None when the
    symmetry is not an exact image action this module knows."""
    factors = [split_spec(part.strip()) for part in spec.split("*")]
    if not factors or any(name not in WIDTHS for name, _ in factors):
        return None
    widths = [WIDTHS[name] for name, _ in factors]
    if any(len(row) != sum(widths) for row in elements):
        return None
    scale = (small_hw[0] / max(1, full_hw[0]), small_hw[1] / max(1, full_hw[1]))
    out: list[list[Step] | None] = []
    for row in elements:
        steps: list[Step] | None = []
        start = 0
        parts = []
        for (name, params), w in zip(factors, widths):
            parts.append(_factor_steps(name, params, [float(v) for v in row[start:start + w]], scale,
                                       small_hw[0] == small_hw[1]))
            start += w
        if any(p is None for p in parts):
            steps = None
        else:
            for p in reversed(parts):  # T_a(T_b x): the rightmost factor acts first
                steps.extend(p)
            if small_hw[0] != small_hw[1] and any(s[0] == "d" and s[1] % 2 for s in steps):
                steps = None  # a quarter turn of a non-square thumbnail changes its shape
            elif min(full_hw) == 1 and any(s[0] == "r" for s in steps):
                steps = None  # on a 1-D signal scale is a time stretch, not a zoom of a picture
        out.append(steps)
    return out
