"""Learned-level estimates from the per-sample orbit table: floor, null, level with a bootstrap CI, extent, flip points.

Definitions (DESIGN.md section 4), for one (model, symmetry) and the task's main metric:
  E      mean error over non-identity elements;
  floor  the same metric for measurement alone (exact actions: the identity evaluated through the
         orbit pipeline; resampled actions: the round trip T_{-t}(T_t x) against x);
  null   the same metric between outputs of two different inputs (what "no symmetry" looks like);
  level  = clip(1 - (E - floor) / (null - floor), 0, 1), "undetermined" when null and floor are not
         clearly separated (a model that ignores its input is not "perfectly symmetric").
The level CI is a percentile bootstrap over inputs (E and floor resampled together, null resampled
on its own pairs), widened if needed so it always contains the point estimate.
"""

from __future__ import annotations

import numpy as np

N_BOOT = 1000
# numpy >= 2 names it trapezoid; numpy 1.x (the declared floor is 1.24) only has trapz, the same rule
_trapezoid = getattr(np, "trapezoid", None) or np.trapz
SEPARATION_Z = 3.0  # null - floor must exceed this many standard errors ...
SEPARATION_MIN = 1e-6  # ... and this absolute margin


def non_identity(arr: np.ndarray, identity_index: int) -> np.ndarray:
    """(N, E) -> (N, E - 1) without the identity column (unchanged when E == 1)."""
    return np.delete(arr, identity_index, axis=1) if arr.shape[1] > 1 else arr


def _level(e, floor, null):
    """Elementwise level; NaN where null <= floor."""
    e, floor, null = np.asarray(e, float), np.asarray(floor, float), np.asarray(null, float)
    span = null - floor
    with np.errstate(divide="ignore", invalid="ignore"):
        lv = np.where(span > 0, 1.0 - (e - floor) / span, np.nan)
    return np.clip(lv, 0.0, 1.0)


def per_sample_floor(table: dict[str, np.ndarray], metric: str, identity_index: int) -> np.ndarray:
    """(N, E) floor of each sample and element: the round trip where measured, else the identity column;
    (M, E) for the M samples of the floor's seeded subset where the table names one (``floor_rows``)."""
    rows = table.get("floor_rows")
    if "floor" in table:
        floor = table["floor"].astype(np.float64)
        return floor if rows is None else floor[rows]
    col = table[metric][:, identity_index : identity_index + 1].astype(np.float64)
    if rows is not None:
        col = col[rows]
    return np.broadcast_to(col, (col.shape[0], table[metric].shape[1]))


def estimate_level(
    err: np.ndarray,
    floor: np.ndarray,
    null: np.ndarray | None,
    identity_index: int,
    *,
    seed: int = 0,
    n_boot: int = N_BOOT,
) -> dict:
    """Summary keys level, level_ci, level_ci_low, level_ci_high, level_status, null from
    err (N, E) and floor (N, E) per-sample values and null (M,) values of random pairs. A floor
    measured on a subset (F, E) with F != N is resampled on its own in the bootstrap, like the null."""
    e_i = non_identity(err.astype(np.float64), identity_index).mean(1)  # (N,)
    f_i = non_identity(np.asarray(floor, np.float64), identity_index).mean(1)  # (N,)
    out: dict = {"null": None, "level": None, "level_ci": None, "level_ci_low": None, "level_ci_high": None}
    if null is None or len(null) < 2:
        out["level_status"] = "undetermined"
        out["level_reason"] = "fewer than 2 samples: no null"
        return out
    null = np.asarray(null, np.float64)
    e_mean, f_mean, n_mean = e_i.mean(), f_i.mean(), null.mean()
    out["null"] = float(n_mean)
    se = np.sqrt(null.var(ddof=1) / len(null) + (f_i.var(ddof=1) / len(f_i) if len(f_i) > 1 else 0.0))
    if not (n_mean - f_mean > max(SEPARATION_MIN, SEPARATION_Z * se)):
        out["level_status"] = "undetermined"
        out["level_reason"] = f"null {n_mean:.3g} is not clearly above floor {f_mean:.3g}: outputs barely depend on the input"
        return out
    level = float(_level(e_mean, f_mean, n_mean))
    rng = np.random.default_rng(seed + 104729)
    boots = np.empty(n_boot)
    n, m = len(e_i), len(null)
    # chunked so memory stays ~ 64 x N per step
    for start in range(0, n_boot, 64):
        k = min(64, n_boot - start)
        idx = rng.integers(0, n, size=(k, n))
        jdx = rng.integers(0, m, size=(k, m))
        f_boot = f_i[idx].mean(1) if len(f_i) == n else f_i[rng.integers(0, len(f_i), size=(k, len(f_i)))].mean(1)
        boots[start : start + k] = _level(e_i[idx].mean(1), f_boot, null[jdx].mean(1))
    boots = boots[np.isfinite(boots)]
    lo, hi = (np.percentile(boots, [2.5, 97.5]) if len(boots) else (level, level))
    lo, hi = float(min(lo, level)), float(max(hi, level))
    out.update(level=level, level_ci=[lo, hi], level_ci_low=lo, level_ci_high=hi, level_status="ok")
    return out


def element_levels(err: np.ndarray, floor: np.ndarray, null_mean: float | None) -> np.ndarray:
    """(E,) level of each element from per-element means (NaN when undetermined)."""
    if null_mean is None:
        return np.full(err.shape[1], np.nan)
    return _level(err.astype(np.float64).mean(0), np.asarray(floor, np.float64).mean(0), null_mean)


def extent(params: np.ndarray, levels: np.ndarray, identity_index: int, tolerance: float, unit: str) -> dict | None:
    """The largest interval of the (one) parameter around the identity on which every element's level
    stays >= 1 - tolerance; with the normalised area under the level curve (``auc``).

    params (E,) sorted or not, levels (E,) per element. Returns None when levels are undetermined."""
    if not np.all(np.isfinite(levels)):
        return None
    order = np.argsort(params, kind="stable")
    p, lv = params[order], levels[order]
    i0 = int(np.nonzero(order == identity_index)[0][0])
    ok = lv >= 1.0 - tolerance
    up = i0
    while up + 1 < len(p) and ok[up + 1]:
        up += 1
    down = i0
    while down - 1 >= 0 and ok[down - 1]:
        down -= 1
    span = p[-1] - p[0]
    auc = float(_trapezoid(lv, p) / span) if span > 0 else float(lv.mean())
    return {"lower": float(p[down]), "upper": float(p[up]), "unit": unit, "tolerance": float(tolerance), "auc": auc,
            "full": bool(down == 0 and up == len(p) - 1)}


def varying_column(elements: np.ndarray) -> int:
    """The first parameter column that is not constant over the elements (0 when all are)."""
    spread = np.ptp(elements, axis=0) if len(elements) else np.zeros(elements.shape[1])
    return int(np.argmax(spread > 0)) if np.any(spread > 0) else 0


def flip_points(flipped: np.ndarray, params: np.ndarray, identity_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the first parameter value above and below the identity at which the prediction
    changes: flipped (N, E) bool, params (E,) -> (up (N,), down (N,)), NaN where it never changes."""
    order = np.argsort(params, kind="stable")
    p, f = params[order], flipped[:, order]
    i0 = int(np.nonzero(order == identity_index)[0][0])

    def first(block: np.ndarray, values: np.ndarray) -> np.ndarray:
        if block.shape[1] == 0:
            return np.full(block.shape[0], np.nan)
        hit = block.argmax(1)
        return np.where(block.any(1), values[hit], np.nan)

    up = first(f[:, i0 + 1 :], p[i0 + 1 :])
    down = first(f[:, :i0][:, ::-1], p[:i0][::-1])
    return up, down
