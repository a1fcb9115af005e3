"""The metric registry: what each summary metric means (direction, labels, units, how it is drawn), declared once.

Torch-free and import-light, so gates, `eqaudit compare`, the terminal, the CI outputs and the report
read it without loading the measuring side. ``DIRECTION`` (+1 higher is better, -1 lower is better) is
derived from it, in declaration order (the order in which `compare` lists metrics).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    """One summary / per-element metric.

    ``table_key``: its per-sample (N, E) table in orbits.npz; ``binary``: per-sample values are 0/1;
    ``floor_key``: the per-sample round-trip table of the same metric (``"floor"`` is the task's main
    metric); ``bounded``: values lie in [0, 1]; ``reduce``: how per-sample values make a per-element
    value; ``plotted``: the report draws it (levels and floors are drawn with their metric instead);
    ``summary``: its column in the summary tables, headed ``header`` (``"main"``: the terminal's and the
    HTML report's columns before the level, shown when some row has a value; ``"more"``: the report's
    rarely needed columns after level and floor; ``""``: none).
    """

    key: str
    direction: int  # +1 higher is better, -1 lower is better
    label: str = ""
    header: str = ""  # short column header
    percent: bool = False
    bounded: bool = True
    table_key: str = ""
    binary: bool = False
    floor_key: str | None = None
    reduce: str = "mean"
    plotted: bool = True
    help: str = ""
    summary: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.direction > 0


def _m(key: str, direction: int, label: str, header: str = "", **kw) -> MetricSpec:
    return MetricSpec(key, direction, label, header or label, table_key=kw.pop("table_key", key), **kw)


METRICS: dict[str, MetricSpec] = {
    s.key: s
    for s in [
        _m("flip_rate", -1, "flip rate", "flips", percent=True, table_key="flipped", binary=True, floor_key="floor_flipped",
           help="flip rate: share of non-identity elements whose prediction differs from the untransformed one", summary="main"),
        _m("prob_tv", -1, "probability shift (TV)", "prob. shift", floor_key="floor",
           help="probability shift (total variation) from the untransformed prediction", summary="main"),
        _m("floor", -1, "floor", bounded=False, plotted=False,
           help="the main metric of the resampling round trip alone (float noise for exact actions)"),
        _m("floor_flip_rate", -1, "floor flip rate", "floor flips", bounded=False, plotted=False, help="flip rate of the resampling round trip alone",
           summary="more"),
        _m("equivariance_error", -1, "equivariance error", "equiv. err.", floor_key="floor", help="equivariance error", summary="main"),
        _m("max_abs_error", -1, "max. abs. error", "max err.", bounded=False, reduce="max", help="maximum absolute error", summary="main"),
        _m("logit_error", -1, "logit error", "logit err.", bounded=False, help="distance between raw logits", summary="main"),
        _m("accuracy", +1, "accuracy", "acc.", percent=True, table_key="correct", binary=True, help="accuracy over the orbit",
           summary="main"),
        _m("clean_accuracy", +1, "clean accuracy", "clean acc.", percent=True, bounded=False, plotted=False,
           help="clean accuracy: accuracy on the untransformed inputs", summary="more"),
        _m("worst_case_accuracy", +1, "worst-case accuracy", "worst acc.", percent=True, bounded=False, plotted=False,
           help="worst-case accuracy: share of samples right at every element of the orbit", summary="main"),
        _m("true_class_prob", +1, "true-class probability", "true p", help="true-class probability over the orbit", summary="more"),
        _m("level", +1, "level", bounded=False, plotted=False,
           help="learned symmetry level: 1 = as symmetric as the measurement can tell, 0 = no better than two unrelated inputs"),
        _m("level_ci_low", +1, "level CI low", bounded=False, plotted=False),
        _m("level_ci_high", +1, "level CI high", bounded=False, plotted=False),
        _m("level_at_init", +1, "level at init", bounded=False, plotted=False),
        _m("lie_derivative", -1, "local error", bounded=False, plotted=False),
        _m("layers_residual", -1, "unexplained share", bounded=False, plotted=False),
        _m("pixel_flip_rate", -1, "pixel flip rate", "pixel flips", table_key="pixel_flip", summary="main"),
        _m("mean_iou", +1, "mean IoU", help="mean intersection over union", summary="main"),
        _m("epe", -1, "end-point error", "EPE", bounded=False, summary="main"),
        _m("iou", +1, "IoU", help="intersection over union", summary="main"),
        _m("box_error", -1, "box error (1 - IoU)", "box err.", floor_key="floor", summary="main"),
        _m("center_error", -1, "box centre error", "centre err.", bounded=False),
        _m("confidence", +1, "confidence", bounded=False, plotted=False),
        _m("rms_error", -1, "RMS error", "RMS err.", bounded=False, help="root-mean-square error in the data's units (e.g. forces)"),
        _m("relative_error", -1, "relative error", "rel. err.", bounded=False, help="error relative to the reference's magnitude"),
        _m("abs_error", -1, "absolute error", "abs. err.", bounded=False, help="absolute error in the data's units (e.g. energy)"),
        _m("invariance_error", -1, "invariance error (M = I)", "inv. err.", bounded=False,
           help="held-out error of an embedding read as invariant (M_g = I), relative to its spread"),
        _m("max_equivariance_error", -1, "worst element's error", "max err.", bounded=False, plotted=False,
           help="held-out error of the fitted embedding map at the worst element"),
        _m("representation_defect", -1, "representation defect", "defect", bounded=False,
           help="largest ||M_g M_h - M_gh|| / ||M_gh|| of the fitted embedding maps"),
        _m("change", -1, "embedding change", "change", floor_key="floor",
           help="per-sample change of the embedding along the orbit, ||phi(g.x) - phi(x)|| / (||phi(g.x)|| + ||phi(x)||)"),
        _m("error_per_atom", -1, "error per atom", "err./atom", bounded=False, help="absolute error divided by the number of real atoms"),
    ]
}

DIRECTION: dict[str, int] = {k: s.direction for k, s in METRICS.items()}
"""+1 higher is better, -1 lower is better: what gates and compare read."""


def summary_columns(place: str) -> list[MetricSpec]:
    """The metrics that are summary-table columns at ``place`` (``"main"`` or ``"more"``), in declaration order."""
    return [s for s in METRICS.values() if s.summary == place]


def metric_spec(key: str) -> MetricSpec:
    """The spec of ``key``; an unknown metric (a task may add one) reads as unbounded, lower is better."""
    return METRICS.get(key) or MetricSpec(key, -1, key.replace("_", " "), key.replace("_", " "), bounded=False, table_key=key)
