"""``--compare A.json B.json``: ratios B / A for every (power mode, timing mode, batch) in both."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ..telemetry.facts import value_of


def _key(run, result) -> Tuple[Any, str, int]:
    mode = run.get("power_mode") or {}
    return (mode.get("name") or mode.get("id"), result["mode"], result["batch"])


def _index(document) -> Dict[Tuple[Any, str, int], Dict[str, Any]]:
    out = {}
    for run in document["runs"]:
        for result in run["results"]:
            out[_key(run, result)] = result
    return out


def _ratio(b: Optional[float], a: Optional[float]) -> Optional[float]:
    if a is None or b is None or a == 0:
        return None
    return b / a


def _p(result, stage, key="p50"):
    stats = result["latency_ms"].get(stage)
    return None if stats is None else stats[key]


def compare(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    """{"rows": [...], "only_a": [...], "only_b": [...], "differences": [...]}"""
    index_a, index_b = _index(a), _index(b)
    rows = []
    for key in sorted(set(index_a) & set(index_b), key=lambda k: (str(k[0]), k[1], k[2])):
        ra, rb = index_a[key], index_b[key]
        pa, pb = ra.get("power") or {}, rb.get("power") or {}
        rows.append({
            "power_mode": key[0], "mode": key[1], "batch": key[2],
            "fps_a": ra["fps"], "fps_b": rb["fps"], "fps": _ratio(rb["fps"], ra["fps"]),
            "e2e_p50": _ratio(_p(rb, "e2e"), _p(ra, "e2e")), "e2e_p99": _ratio(_p(rb, "e2e", "p99"), _p(ra, "e2e", "p99")),
            "preprocess_p50": _ratio(_p(rb, "preprocess"), _p(ra, "preprocess")),
            "inference_p50": _ratio(_p(rb, "inference"), _p(ra, "inference")),
            "postprocess_p50": _ratio(_p(rb, "postprocess"), _p(ra, "postprocess")),
            "j_per_frame": _ratio(pb.get("j_per_frame"), pa.get("j_per_frame")),
            "fps_per_w": _ratio(rb.get("fps_per_w"), ra.get("fps_per_w")),
        })
    differences = []
    pairs = [
        ("device", a.get("device_key"), b.get("device_key")),
        ("model", a["model"]["path"], b["model"]["path"]),
        ("backend", a["model"].get("backend"), b["model"].get("backend")),
        ("frames", a["config"]["frames"], b["config"]["frames"]),
        ("cpu", value_of(a["platform"]["host"].get("cpu_model")), value_of(b["platform"]["host"].get("cpu_model"))),
        ("m2f_edge", a.get("m2f_edge_version"), b.get("m2f_edge_version")),
    ]
    for name, va, vb in pairs:
        if va != vb:
            differences.append("{}: A={} B={}".format(name, va, vb))
    return {"rows": rows, "only_a": sorted(map(str, set(index_a) - set(index_b))),
            "only_b": sorted(map(str, set(index_b) - set(index_a))), "differences": differences}


def format_comparison(a_path: str, b_path: str, comparison: Dict[str, Any]) -> str:
    def cell(value, digits=2):
        return "n/a" if value is None else "{:.{}f}".format(value, digits)

    lines = ["ratios B / A   A = {}   B = {}".format(a_path, b_path),
             "(FPS and FPS/W: > 1 means B is faster / more efficient; latency and J/frame: < 1 means B is better)", ""]
    header = ["power mode", "mode", "batch", "FPS A", "FPS B", "FPS", "e2e p50", "e2e p99", "pre p50", "infer p50",
              "post p50", "J/frame", "FPS/W"]
    table = [header]
    for row in comparison["rows"]:
        table.append([str(row["power_mode"]), row["mode"], str(row["batch"]), cell(row["fps_a"]), cell(row["fps_b"]),
                      cell(row["fps"], 3), cell(row["e2e_p50"], 3), cell(row["e2e_p99"], 3),
                      cell(row["preprocess_p50"], 3), cell(row["inference_p50"], 3), cell(row["postprocess_p50"], 3),
                      cell(row["j_per_frame"], 3), cell(row["fps_per_w"], 3)])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for index, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    if not comparison["rows"]:
        lines.append("no (power mode, mode, batch) measured in both files")
    for key in comparison["only_a"]:
        lines.append("only in A: {}".format(key))
    for key in comparison["only_b"]:
        lines.append("only in B: {}".format(key))
    for difference in comparison["differences"]:
        lines.append("differs: " + difference)
    return "\n".join(lines)
