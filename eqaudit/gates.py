"""Gates and regressions as pure functions over summaries: gate and tolerance syntax, threshold checks, baseline comparison.

Gate syntax (``--gate``, ``gates = [...]`` in a config file)::

    [SYMMETRY:]METRIC OP VALUE        OP is <= or < (upper bound), >= or > (lower bound); VALUE may
                                      end in %, and may be inf or -inf (never NaN)

    flip_rate <= 0.01                 every audited symmetry
    rot90:flip_rate<=1%               symmetries named rot90 (any parameters)
    rotate:step=15:prob_tv <= 0.05    exactly the symmetry rotate:step=15
    level_ci_low >= 0.9               lower bound on the lower end of the level's confidence interval
    rot90[180]:flip_rate>=0.8         one element of the orbit: its per-element row, not the summary
    translate:max=1[dx=1 dy=0]:prob_tv<=0.1

An element is named in brackets right after the symmetry, by its label as elements.csv shows it
(``180°``, ``flip-h``, ``r1·f``, ``dx=1 dy=0``); matching ignores case, whitespace and a trailing
``°``. The gate then compares that element's per-element value (the metrics elements.csv has, e.g.
flip_rate, prob_tv, accuracy, level), and its record carries the element's label.

``--fail-over METRIC=VALUE`` is the short form for every symmetry, in the metric's natural direction
(an upper bound where lower is better, a lower bound for accuracy, level, ...).

Tolerance syntax (``--max-regression``, ``compare --tolerance``): ``0.02`` (absolute, every metric),
``5%`` (relative to the baseline's value), ``METRIC=0.01`` or ``METRIC=5%`` (one metric).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import ConfigError
from .metricspec import DIRECTION
from .result import AuditResult, Gate, raw_logit_key

OPS = ("<=", ">=", "<", ">")
DEFAULT_TOLERANCE = 0.01

# Summary keys that hold numbers eqaudit knows about besides DIRECTION (which lists metrics with a
# better and a worse side). A gate on a name that is in neither is accepted only when the summary
# has it (tasks may add metrics), and is otherwise a usage error.
LEVEL_KEYS = ("level", "level_ci_low", "level_ci_high")
OTHER_NUMERIC = ("null", "unresolved_elements")
NOT_NUMERIC = {
    "level_ci": "gate its ends, level_ci_low or level_ci_high",
    "level_status": "gate level or level_ci_low (an undetermined level fails a gate)",
    "extent": "gate level or an error metric instead",
    "level_reason": "gate level or level_ci_low (an undetermined level fails a gate)",
}


def known_metrics() -> list[str]:
    """Every summary metric name a gate may use before the summary exists."""
    return list(dict.fromkeys([*DIRECTION, *LEVEL_KEYS, *OTHER_NUMERIC]))


def natural_op(metric: str) -> str:
    """``>=`` where higher is better (accuracy, level, ...), ``<=`` otherwise (errors, unknown metrics)."""
    return ">=" if DIRECTION.get(metric, -1) > 0 else "<="


@dataclass(frozen=True)
class GateSpec:
    """One requested gate: ``metric op threshold`` on the symmetries ``symmetry`` selects (None: all)."""

    metric: str
    op: str
    threshold: float
    symmetry: str | None = None  # a symmetry name ("rot90") or full spec ("rotate:step=15"); None = every one
    origin: str = "gate"  # "gate" (--gate / gates) or "fail_over"
    element: str | None = None  # one orbit element's label as the user wrote it ("180"); None = the summary
    source: str = field(default="", compare=False)  # the gate as the user wrote it ("rot90: flip_rate <= 1%"), quoted in every message

    def text(self) -> str:
        """The canonical form, ``rot90[180]:flip_rate<=0.01`` (what a config file or --gate accepts back)."""
        head = f"{self.symmetry}[{self.element}]:" if self.element is not None else (f"{self.symmetry}:" if self.symmetry else "")
        return f"{head}{self.metric}{self.op}{self.threshold!r}"

    def written(self) -> str:
        """Where messages name this gate: ``gate 'rot90:flip_rate <= 1%'`` or ``--fail-over 'flip_rate=5%'``."""
        quoted = repr(self.source or self.text())
        return f"--fail-over {quoted}" if self.origin == "fail_over" else f"gate {quoted}"

    def passes(self, value: float) -> bool:
        """``value op threshold`` (value a finite number or +-inf)."""
        t = self.threshold
        return {"<=": value <= t, ">=": value >= t, "<": value < t, ">": value > t}[self.op]

    def applies_to(self, name: str, spec: str) -> bool:
        if self.symmetry is None:
            return True
        return self.symmetry in (name, spec) or _canonical(self.symmetry) == spec


def _canonical(selector: str) -> str | None:
    """The canonical spec of a selector such as ``rotate:min=-90, step=15`` (None when it does not parse)."""
    if ":" not in selector:
        return selector
    from .symmetries import parse_symmetry

    try:
        return parse_symmetry(selector).spec
    except Exception:
        return None


def parse_number(text: Any, what: str) -> float:
    """The one number parser of gates, --fail-over and tolerances: a number, or a string holding one,
    optionally ending in % (``5%`` = 0.05); ``inf`` and ``-inf`` are accepted (a bound that always
    holds or never does), NaN never is (a bound nothing satisfies): ConfigError (exit 2)."""
    if isinstance(text, bool) or not isinstance(text, (int, float, str)):
        raise ConfigError(f"Expected a number (or a percentage like 5%) for {what}, got {text!r}.")
    t = str(text).strip()
    scale = 1.0
    if t.endswith("%"):
        t, scale = t[:-1].strip(), 0.01
    try:
        v = float(t) * scale
    except ValueError:
        raise ConfigError(f"Expected a number (or a percentage like 5%) for {what}, got {str(text).strip()!r}.") from None
    if math.isnan(v):
        raise ConfigError(f"Expected a number for {what}, got {str(text).strip()!r}: NaN is no bound (nothing compares "
                          "to it); write a number, or inf for no bound.")
    return v



def parse_gate(text: str, symmetry: str | None = None) -> GateSpec:
    """``"[SYMMETRY:]METRIC OP VALUE"`` -> GateSpec; ``symmetry`` is the selector when the text has none
    (config tables keyed by symmetry). Raises ConfigError (exit 2) on malformed text."""
    if not isinstance(text, str):
        raise ConfigError(f"Expected a gate string like 'rot90:flip_rate<=0.01', got {text!r}.")
    raw = text.strip()
    # an element label may hold anything but ']': look for the operator after the closing bracket
    after = raw.find("]", raw.find("[")) + 1 if "[" in raw else 0
    i = min((p for p in (raw.find("<", after), raw.find(">", after)) if p >= 0), default=-1)
    if i < 0:
        hint = " (--fail-over takes METRIC=VALUE)" if "=" in raw else ""
        raise ConfigError(f"Expected a gate like 'rot90:flip_rate<=0.01' or 'level_ci_low>=0.9', got {raw!r}; "
                          f"use <= for an upper bound or >= for a lower bound{hint}.")
    op = raw[i : i + 2] if raw[i + 1 : i + 2] == "=" else raw[i]
    if raw[i + len(op) : i + len(op) + 1] in "<>" and raw[i + len(op) : i + len(op) + 1]:
        raise ConfigError(f"Gate {raw!r}: expected one operator (<=, <, >= or >), got {raw[i:i + len(op) + 1]!r}.")
    left, right = raw[:i].strip(), raw[i + len(op) :].strip()
    if "[" in left:
        lb, rb = left.find("["), left.find("]", left.find("["))
        rest = left[rb + 1 :].strip() if rb > lb else ""
        if not rest.startswith(":"):
            raise ConfigError(f"Gate {raw!r}: expected SYMMETRY[ELEMENT]:METRIC OP VALUE with the element in brackets "
                              f"right after the symmetry, got {left!r}; write e.g. 'rot90[180]:flip_rate<=0.01'.")
        selector, element, metric = left[:lb].strip(), left[lb + 1 : rb].strip(), rest[1:].strip().lower()
        if ":" in metric:
            raise ConfigError(f"Gate {raw!r}: expected the element in brackets right after the whole symmetry spec, got "
                              f"{left!r}; write e.g. 'translate:max=1[dx=1 dy=0]:prob_tv<=0.1'.")
    else:
        selector, _, metric = left.rpartition(":")
        selector, element, metric = selector.strip(), None, metric.strip().lower()  # metric names are lower case
    if not all(part.isidentifier() for part in metric.split(".")):  # "forces.equivariance_error": one declared output
        raise ConfigError(f"Gate {raw!r}: expected a metric name such as flip_rate before {op}, got {metric!r}.")
    if symmetry and "[" in symmetry:  # a config table keyed by "rot90[180]"
        symmetry, inherited = _split_element(symmetry, raw)
        if element is not None:
            raise ConfigError(f"Gate {raw!r} under {symmetry}[{inherited}] names an element again; write just '{metric}{op}{right}'.")
        element = inherited
    if selector and symmetry:
        raise ConfigError(f"Gate {raw!r} under symmetry {symmetry!r} names a symmetry again; write just '{metric}{op}{right}'.")
    selector = selector or symmetry
    if selector in ("*", ""):
        selector = None
    if element is not None and (selector is None or not element):
        what = "an element label between the brackets" if not element else "a symmetry before the element"
        raise ConfigError(f"Gate {raw!r}: expected {what}, got {left!r}; write e.g. 'rot90[180]:flip_rate<=0.01'.")
    threshold = parse_number(right, f"the bound of gate {raw!r}")
    return GateSpec(metric, op, threshold, selector, element=element, source=raw)


def _split_element(key: str, raw: str) -> tuple[str, str]:
    """``"rot90[180]"`` -> ``("rot90", "180")`` (a config table key that names one element)."""
    lb, rb = key.find("["), key.rfind("]")
    sym, element = key[:lb].strip(), key[lb + 1 : rb].strip()
    if rb != len(key.rstrip()) - 1 or not sym or not element:
        raise ConfigError(f"Expected a gate table key like 'rot90' or 'rot90[180]', got {key!r} (for gate {raw!r}).")
    return sym, element


def _norm_label(text: str) -> str:
    """What element matching compares: no whitespace or case, no trailing degree sign, x for ×, · for *."""
    t = "".join(str(text).split()).lower().replace("×", "x").replace("*", "·")
    return t[:-1] if t.endswith("°") else t


def element_index(element: str, labels: list[str], where: str) -> int:
    """The index of the orbit element ``element`` names among ``labels`` (see the module docstring for
    the matching rules); ConfigError (exit 2) listing the valid labels, with the closest, otherwise."""
    want = _norm_label(element)
    for e, label in enumerate(labels):
        if _norm_label(label) == want:
            return e
    norms = {_norm_label(label): str(label) for label in labels}
    close = difflib.get_close_matches(want, list(norms), n=1, cutoff=0.5)
    hint = f"did you mean {norms[close[0]]!r}? " if close else ""
    raise ConfigError(f"Expected an element of the orbit in {where}, got {element!r}; {hint}"
                      f"valid labels: {', '.join(map(str, labels))}.")


PER_ELEMENT_NOT_METRICS = ("element", "label", "resolved")


def per_element_metrics(per_element: list[dict]) -> list[str]:
    """The numeric keys of the per-element rows (what an element gate can compare)."""
    keys = [k for row in per_element for k, v in row.items() if k not in PER_ELEMENT_NOT_METRICS and (_is_number(v) or v is None)]
    return list(dict.fromkeys(keys))


def gate_specs(raw: Any) -> list[GateSpec]:
    """Gates from a setting value: a string or list of gate strings, or a table keyed by symmetry whose
    values are a gate string or a list of them (``{"rot90": ["flip_rate<=0.01"], "*": "prob_tv<=0.1"}``)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [parse_gate(p) for p in _split_gate_text(raw)]
    if isinstance(raw, (list, tuple)) and all(isinstance(g, GateSpec) for g in raw):
        return list(raw)
    if isinstance(raw, Mapping):
        out = []
        for selector, items in raw.items():
            for item in [items] if isinstance(items, str) else _as_list(items, f"gates for {selector!r}"):
                out.append(parse_gate(item, symmetry=str(selector)))
        return out
    return [parse_gate(p) for p in _as_list(raw, "gates")]


def _as_list(v: Any, what: str) -> list:
    if isinstance(v, (list, tuple)):
        return list(v)
    raise ConfigError(f"Expected a list of gate strings for {what}, got {v!r}.")


def _split_gate_text(s: str) -> list[str]:
    """Gates in one string (environment variables) are separated by ';' or newlines (commas belong to specs)."""
    return [p.strip() for chunk in s.split("\n") for p in chunk.split(";") if p.strip()]


def fail_over_specs(fail_over: Any) -> list[GateSpec]:
    """``--fail-over`` gates, each in its metric's natural direction, from ``{"flip_rate": 0.05}``,
    ``["flip_rate=0.05", ...]``, ``"flip_rate=0.05,prob_tv=5%"`` or GateSpecs already parsed."""
    if fail_over is None:
        return []
    if isinstance(fail_over, Mapping):
        items = [(str(k), v, f"{k}={v}") for k, v in fail_over.items()]
    else:
        parts = fail_over.split(",") if isinstance(fail_over, str) else fail_over
        if not isinstance(parts, (list, tuple)):
            raise ConfigError(f"Expected --fail-over METRIC=VALUE pairs, got {fail_over!r}; write e.g. flip_rate=0.05.")
        if all(isinstance(p, GateSpec) for p in parts):
            return list(parts)
        items = []
        for p in parts:
            if not isinstance(p, str) or "=" not in p:
                raise ConfigError(f"Expected --fail-over METRIC=VALUE, got {p!r}; write e.g. flip_rate=0.05 "
                                  "(--gate takes METRIC<=VALUE).")
            k, v = p.split("=", 1)
            items.append((k.strip(), v.strip(), p.strip()))
    out = []
    for metric, value, written in items:
        metric = metric.strip().lower()
        if not all(part.isidentifier() for part in metric.split(".")):
            raise ConfigError(f"Expected --fail-over METRIC=VALUE with a metric name such as flip_rate, got {written!r}.")
        threshold = parse_number(value, f"--fail-over {written!r}")
        out.append(GateSpec(metric, natural_op(metric), threshold, None, "fail_over", source=written))
    return out


def all_specs(fail_over: Any, gates: Any = None) -> list[GateSpec]:
    """Every gate requested by the ``fail_over`` and ``gates`` settings, in that order."""
    return fail_over_specs(fail_over) + gate_specs(gates)


def _unknown_metric(metric: str, where: str, candidates: Iterable[str]) -> ConfigError:
    cands = list(dict.fromkeys(candidates))
    close = difflib.get_close_matches(metric, cands, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(sorted(cands))}"
    return ConfigError(f"Unknown gate metric {metric!r} in {where}; {hint}")


def check_gates(
    specs: list[GateSpec],
    *,
    symmetries: list | None = None,
    has_labels: bool = True,
    label_metrics: frozenset[str] = frozenset(),
) -> None:
    """Checks that need no summary, before the sweep: each selector names an audited symmetry, no gate
    uses a non-numeric key, a label metric needs labels, and a name close to a known metric (a typo)
    is rejected with a suggestion. Other unknown names are left to :func:`evaluate_gates`, which
    accepts them when the summary has them (tasks may add metrics)."""
    known = known_metrics()
    for g in specs:
        where = g.written()
        if g.metric in NOT_NUMERIC:
            raise ConfigError(f"Gate metric {g.metric!r} in {where} is not a number; {NOT_NUMERIC[g.metric]}.")
        if "." not in g.metric and g.metric not in known and difflib.get_close_matches(g.metric, known, n=1, cutoff=0.8):
            raise _unknown_metric(g.metric, where, known)
        if g.metric in label_metrics and not has_labels:
            raise ConfigError(f"{where[0].upper()}{where[1:]} needs labels ({g.metric!r}), but the data has no 'y'; drop the gate or add labels.")
        if g.symmetry is not None and symmetries is not None:
            if not any(g.applies_to(s.name, s.spec) for s in symmetries):
                audited = list(dict.fromkeys([x for s in symmetries for x in (s.name, s.spec)]))
                close = difflib.get_close_matches(g.symmetry, audited, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"this scan audits {', '.join(audited)}"
                raise ConfigError(
                    f"{where[0].upper()}{where[1:]} names symmetry {g.symmetry!r}, which this scan does not audit; {hint} "
                    "(or add it with --symmetry)."
                )
        if g.element is not None and symmetries is not None:
            for s in symmetries:
                labels = s.gate_labels() if hasattr(s, "gate_labels") else getattr(s, "labels", None)
                if g.applies_to(s.name, s.spec) and labels is not None:
                    element_index(g.element, list(labels), f"{where} (symmetry {s.spec})")


def evaluate_gates(summary: dict, fail_over: Any, specs: Iterable[GateSpec] = (), *,
                   symmetry: Any = None, per_element: list[dict] | None = None) -> list[Gate]:
    """The gates of one symmetry's summary.

    ``fail_over`` (METRIC -> VALUE) gates every symmetry in the metric's natural direction; ``specs``
    apply when their selector matches ``symmetry`` (anything with ``name`` and ``spec``; None matches
    only gates without a selector). A gate whose value is missing or None (e.g. an undetermined level)
    fails. A gate without a selector skips a symmetry whose summary lacks a known metric (e.g. the
    floor flip rate of an exact symmetry). A metric that is neither known nor in the summary raises
    ConfigError (exit 2) with the closest name. A gate naming an element compares that element's row
    of ``per_element`` (rows with a ``label``, as the result stores them) instead of the summary.
    """
    name = getattr(symmetry, "name", None)
    spec = getattr(symmetry, "spec", None)
    gates = []
    for g in [*fail_over_specs(fail_over), *specs]:
        if g.symmetry is not None and (symmetry is None or not g.applies_to(name, spec)):
            continue
        if g.element is not None:
            gates.append(_element_gate(g, per_element or [], spec))
            continue
        if g.metric not in summary:
            if g.metric not in known_metrics():
                numeric = [k for k, v in summary.items() if _is_number(v)]
                raise _unknown_metric(g.metric, g.written(), [*numeric, *known_metrics()])
            if g.symmetry is None:
                continue
        gates.append(_compare(g, summary.get(g.metric)))
    return gates


def _compare(g: GateSpec, value: Any, element: str | None = None) -> Gate:
    if value is not None and not _is_number(value):
        raise ConfigError(f"Gate metric {g.metric!r} in {g.written()} holds {type(value).__name__}, not a number; "
                          "gate a numeric summary key.")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Gate(g.metric, g.op, float(g.threshold), None, False, element)
    value = float(value)
    return Gate(g.metric, g.op, float(g.threshold), value, bool(g.passes(value)), element)


def _element_gate(g: GateSpec, per_element: list[dict], spec: str | None) -> Gate:
    """A gate on one element's row: the element by its label, the metric among the row's metrics."""
    where = f"{g.written()} (symmetry {spec})"
    labels = [str(row.get("label", e)) for e, row in enumerate(per_element)]
    row = per_element[element_index(g.element, labels, where)]
    if g.metric not in row:
        metrics = per_element_metrics(per_element)
        close = difflib.get_close_matches(g.metric, metrics, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"Expected a per-element metric in {where}, got {g.metric!r}, which the per-element rows do not "
                          f"carry; {hint}per-element metrics: {', '.join(metrics)} (gate summary metrics without [ELEMENT]).")
    return _compare(g, row[g.metric], str(row.get("label", g.element)))


def check_gates_matched(summaries: list[dict], specs: Iterable[GateSpec]) -> None:
    """A gate without a symmetry selector skips symmetries that lack its metric; when no symmetry of
    the scan has it at all, the gate would check nothing: a usage error (exit 2), not a silent pass."""
    measured = {k for sm in summaries for k, v in sm.items() if _is_number(v) or v is None}
    for g in specs:
        if g.symmetry is None and g.metric not in measured:
            numeric = sorted(k for sm in summaries for k, v in sm.items() if _is_number(v))
            close = difflib.get_close_matches(g.metric, numeric, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{g.written()} names {g.metric!r}, which no symmetry of this scan measures; {hint}measured here: "
                f"{', '.join(dict.fromkeys(numeric))}. Drop the gate, or add the option that measures it "
                "(--local for lie_derivative, --level-at-init, or another --task)."
            )


def gates_for(summary: dict, symmetry: Any, specs: Iterable[GateSpec], per_element: list[dict] | None = None) -> list[Gate]:
    """The gates ``specs`` (``--fail-over`` and ``--gate`` alike) put on one symmetry's final summary
    (and, for gates naming an element, on its ``per_element`` rows)."""
    return evaluate_gates(summary, None, specs, symmetry=symmetry, per_element=per_element)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _decimals(x: float) -> int:
    """Decimal places of ``x`` as its shortest repr writes it: 0.01 -> 2, 5.0 -> 0, 1e-05 -> 5."""
    if not math.isfinite(x):
        return 0
    mantissa, _, exp = repr(abs(x)).partition("e")
    frac = mantissa.partition(".")[2].rstrip("0")
    return max(0, len(frac) - (int(exp) if exp else 0))


def shown_value(value: float, threshold: float) -> str:
    """``value`` rounded to the precision of the gate's bound (as many decimals as the bound has, at
    least two below 1: an accuracy of 0.125 against 1 reads 0.12, not 0), with more decimals only
    where rounding would make it read as the bound itself."""
    if not math.isfinite(value) or threshold is None:
        return repr(value)
    d = max(_decimals(threshold), 2 if abs(value) < 1 else 0)
    while d < 17 and round(value, d) == threshold and value != threshold:
        d += 1
    return f"{value:.{d}f}"


def failure_line(model: str, spec: str, gate: Gate, summary: Mapping[str, Any] | None = None) -> str:
    """One line for a failed gate: model, symmetry, the compared value (to the gate's precision) and the bound."""
    t = gate.threshold  # None: an infinite bound read back from result.json (JSON has no inf)
    if t is None:
        bound = f"{gate.op} {'inf' if gate.op.startswith('<') else '-inf'}"
    else:
        bound = f"{gate.op} {t:g}" if math.isfinite(t) and float(f"{t:g}") == t else f"{gate.op} {t!r}"
    if gate.value is None:
        why = "was not measured"
        if summary is not None and gate.metric.startswith("level") and summary.get("level_status") in ("undetermined", "floor-limited"):
            status = summary.get("level_status")
            why = f"is {status} ({summary.get('level_reason') or 'null and floor too close to tell'})"
        return f"{model}, symmetry {spec}: {gate.name} {why}, so it cannot satisfy {bound}"
    return f"{model}, symmetry {spec}: {gate.name} = {shown_value(gate.value, gate.threshold)}, bound {bound}"


# ---------------------------------------------------------------------------------------------------
# tolerances and baselines


@dataclass(frozen=True)
class Tolerance:
    """How much a metric may get worse: ``value`` absolute, or a share of the baseline's magnitude."""

    value: float
    relative: bool = False

    def allowed(self, base: float) -> float:
        if self.relative and not math.isinf(self.value):
            return self.value * abs(base)
        return self.value  # inf: any worsening is allowed (also relative to a zero baseline)

    def __str__(self) -> str:
        return f"{100 * self.value:g}%" if self.relative else f"{self.value:g}"


def _tolerance(text: Any, what: str) -> Tolerance:
    if isinstance(text, bool):
        raise ConfigError(f"Expected a tolerance (0.01 or 5%) for {what}, got {text!r}.")
    if isinstance(text, (int, float)):
        t = Tolerance(parse_number(text, what))
    elif isinstance(text, str):
        rel = text.strip().endswith("%")
        t = Tolerance(parse_number(text, what), rel)
    else:
        raise ConfigError(f"Expected a tolerance (0.01 or 5%) for {what}, got {text!r}.")
    if t.value < 0:
        raise ConfigError(f"Expected a tolerance >= 0 (or inf) for {what}, got {text!r}.")
    return t


def parse_tolerances(raw: Any) -> dict[str, Tolerance]:
    """Tolerances per metric, ``"*"`` being the default for every other metric.

    Accepts a number (``0.02``), a string (``"5%"``, ``"level=5%"``, ``"0.01,level=5%"``), a list of
    such strings, or a table (``{"*" = 0.01, level = "5%"}``; ``default`` is a synonym of ``*``)."""
    if raw is None:
        return {}
    items: list[tuple[str, Any]] = []
    if isinstance(raw, Mapping):
        items = [(str(k), v) for k, v in raw.items()]
    else:
        parts = raw if isinstance(raw, (list, tuple)) else [raw]
        for p in parts:
            if isinstance(p, str):
                for piece in (x.strip() for x in p.split(",")):
                    if piece:
                        k, sep, v = piece.partition("=")
                        items.append((k.strip(), v.strip()) if sep else ("*", piece))
            else:
                items.append(("*", p))
    out: dict[str, Tolerance] = {}
    for k, v in items:
        k = "*" if k in ("default", "") else k
        if k != "*" and not k.isidentifier():
            raise ConfigError(f"Expected METRIC=TOLERANCE with a metric name, got {k!r}.")
        out[k] = _tolerance(v, "every metric" if k == "*" else k)
    return out


def tolerances_to_strings(tols: Mapping[str, Tolerance]) -> dict[str, str]:
    return {k: str(t) for k, t in tols.items()}


def _as_tolerances(tolerance: Any) -> dict[str, Tolerance]:
    if isinstance(tolerance, Tolerance):
        return {"*": tolerance}
    if isinstance(tolerance, Mapping) and all(isinstance(v, Tolerance) for v in tolerance.values()):
        return dict(tolerance)
    return parse_tolerances(tolerance)


@dataclass
class Regression:
    model: str
    symmetry: str
    metric: str
    base: float
    new: float
    tolerance: float  # the allowed worsening, absolute, for this baseline value
    rule: str = ""  # how the tolerance was given, e.g. "5%" or "0.01"

    def describe(self) -> str:
        rule = f" = {self.rule} of |base|" if self.rule.endswith("%") else ""
        worse = abs(self.new - self.base)
        return (f"{self.model}, symmetry {self.symmetry}: {self.metric} {self.base!r} -> {self.new!r} "
                f"(worse by {worse:.6g}, allowed {self.tolerance:.6g}{rule})")


MEASUREMENT_METRICS = frozenset({"floor", "floor_flip_rate"})


@dataclass
class Comparison:
    rows: list[tuple[str, str, str, float, float, bool]]  # model, symmetry, metric, base, new, regressed
    regressions: list[Regression]
    missing: list[str]  # (model, symmetry) in base but not in new
    allowed: list[float] | None = None  # per row: the allowed worsening (absolute)
    warnings: list[str] = field(default_factory=list)  # e.g. different data or sample counts

    @property
    def passed(self) -> bool:
        return not self.regressions and not self.missing


def _key(result: AuditResult, s, by_model: bool = True) -> tuple[str, str]:
    return (Path(result.models[s.model].path).name if by_model else ""), s.spec


def check_tolerance_metrics(tols: Mapping[str, Any], *results: AuditResult) -> None:
    """A tolerance on a metric that no result has and eqaudit does not know is a usage error (exit 2)."""
    seen = {k for r in results for s in r.symmetries for k, v in s.summary.items() if _is_number(v)}
    cands = [*known_metrics(), *sorted(seen)]
    for metric in tols:
        if metric != "*" and metric not in seen and metric not in known_metrics():
            close = difflib.get_close_matches(metric, cands, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(sorted(set(cands)))}"
            raise ConfigError(f"Unknown metric {metric!r} in a tolerance; {hint}")


def compare_results(base: AuditResult, new: AuditResult, tolerance: Any = DEFAULT_TOLERANCE) -> Comparison:
    """Every summary metric with a known direction (plus any metric given its own tolerance), matched
    by (model file name, symmetry spec); by spec alone when both results hold one model each, so a
    retrained checkpoint under a new name still compares.

    ``tolerance``: a number (absolute, every metric), a Tolerance, or anything :func:`parse_tolerances`
    reads (``{"*": 0.01, "level": "5%"}``). A metric regressed when it got worse by more than its
    allowed amount. A (model, symmetry) in the baseline but missing from the new result counts as a
    regression too.
    """
    tols = _as_tolerances(tolerance)
    default = tols.get("*", Tolerance(DEFAULT_TOLERANCE))
    by_model = not (len(base.models) == 1 and len(new.models) == 1)
    # the floor describes the measurement (interpolation), not the model: compared only when asked for
    metrics = {m: d for m, d in DIRECTION.items() if m not in MEASUREMENT_METRICS}
    metrics.update({m: DIRECTION.get(m, -1) for m in tols if m != "*"})
    new_by_key = {_key(new, s, by_model): s for s in new.symmetries}
    rows, regressions, missing, allowed = [], [], [], []
    for s in base.symmetries:
        k = _key(base, s, by_model)
        label = Path(base.models[s.model].path).name
        other = new_by_key.get(k)
        if other is None:
            missing.append(f"{label} {s.spec}")
            continue
        label = Path(new.models[other.model].path).name  # the regression belongs to the new model
        for metric, direction in metrics.items():
            b, n = s.summary.get(metric), other.summary.get(metric)
            if not (_is_number(b) and _is_number(n)):
                continue
            if raw_logit_key(metric, s.summary) and metric not in tols:
                continue  # raw logits of a classifier are unbounded: compared only when given their own tolerance
            tol = tols.get(metric, default)
            limit = tol.allowed(b)
            worse = (b - n) if direction > 0 else (n - b)
            regressed = worse > limit + 1e-12 * max(1.0, abs(b))
            rows.append((label, s.spec, metric, b, n, regressed))
            allowed.append(limit)
            if regressed:
                regressions.append(Regression(label, s.spec, metric, b, n, limit, str(tol)))
    return Comparison(rows, regressions, missing, allowed, _data_warnings(base, new))


def _data_warnings(base: AuditResult, new: AuditResult) -> list[str]:
    """Differences in what was measured that make a comparison less meaningful (not failures)."""
    warnings = []
    if Path(base.data.path).name != Path(new.data.path).name:
        warnings.append(f"the data differ: {Path(base.data.path).name} (baseline) vs {Path(new.data.path).name}")
    if base.data.n_samples != new.data.n_samples:
        warnings.append(f"the baseline measured {base.data.n_samples} samples, the new result {new.data.n_samples}: "
                        "differences within sampling noise may read as regressions")
    return warnings
