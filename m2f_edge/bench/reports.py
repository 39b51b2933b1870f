"""Writing a benchmark document out: terminal table, JSON (with its schema), CSV, Markdown, plot."""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Dict, List, Optional

from ..telemetry.facts import value_of
from .model_card import COMPARABILITY_NOTE

STAT_KEYS = ("min", "mean", "p50", "p90", "p95", "p99", "max", "std")
CSV_STAGES = ("e2e", "preprocess", "inference", "postprocess", "upload", "enqueue", "gpu")


def schema_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.json")


def load_schema() -> Dict[str, Any]:
    with open(schema_path()) as handle:
        return json.load(handle)


def validate(document: Dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when the document does not follow schema.json."""
    try:
        import jsonschema
    except ImportError:
        raise RuntimeError("validating needs jsonschema: pip install jsonschema")
    jsonschema.validate(document, load_schema())


def _plain(value):
    """numpy scalars and tuples -> JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            pass
    return value


def write_json(document: Dict[str, Any], path: str) -> None:
    with open(path, "w") as handle:
        json.dump(_plain(document), handle, indent=2, sort_keys=False)
        handle.write("\n")


def read_json(path: str) -> Dict[str, Any]:
    with open(path) as handle:
        document = json.load(handle)
    if not isinstance(document, dict) or document.get("tool") != "m2f-edge-bench":
        raise ValueError("{} is not an m2f-edge-bench JSON result".format(path))
    return document


# ----------------------------------------------------------------------------- formatting helpers
def _num(value, digits=1, suffix=""):
    if value is None:
        return "n/a"
    return "{:.{}f}{}".format(value, digits, suffix)


def _stat(result, stage, key="p50", digits=1):
    stats = result["latency_ms"].get(stage)
    return _num(None if stats is None else stats[key], digits)


def _mode_label(run):
    mode = run.get("power_mode")
    if not mode:
        return "n/a"
    return "{} ({})".format(mode.get("name") or "?", mode.get("id") if mode.get("id") is not None else "?")


def platform_summary(document: Dict[str, Any]) -> List[str]:
    """A few lines naming the machine, its software and how power was measured."""
    platform = document["platform"]
    host = platform["host"]
    lines = []
    jetson = platform.get("jetson")
    if jetson:
        lines.append("board: {}  L4T {}  JetPack {}".format(
            value_of(jetson.get("board_model"), "?"), value_of(jetson.get("l4t"), "?"),
            value_of(jetson.get("jetpack"), "?")))
    nvml = platform.get("nvml") or {}
    core = value_of(host.get("m2f_edge_core"), {}) or {}
    gpu = value_of(nvml.get("gpu_name")) or core.get("gpu_name")
    lines.append("host: {} x{}  {} GiB  {}  Python {}  numpy {}{}".format(
        value_of(host.get("cpu_model"), "?"), value_of(host.get("cpu_count"), "?"),
        value_of(host.get("memory_gib"), "?"), value_of(host.get("os"), "?"), value_of(host.get("python"), "?"),
        value_of(host.get("numpy"), "?"), "  GPU: {}".format(gpu) if gpu else ""))
    ort = value_of(host.get("onnxruntime"))
    lines.append("software: onnxruntime {}  TensorRT {}  core CUDA {}".format(
        ort["version"] if ort else "n/a", value_of(host.get("tensorrt"), "n/a"),
        core.get("cuda_version") or "no"))
    model = document["model"]
    config = document["config"]
    lines.append("model: {}  backend {}  contract {}  input {}  frames: {}".format(
        model["path"], model.get("backend"), model.get("contract"),
        "x".join(str(v) for v in model["input_size"]) if model.get("input_size") else "?", config["frames"]))
    return lines


def _result_cells(result: Dict[str, Any]) -> List[str]:
    """One result's cells, in the column order of both the terminal table and the Markdown table."""
    power = result.get("power") or {}
    card = result.get("model_card")
    bytes_per_frame = result.get("result_bytes_per_frame")
    return [
        result.get("runner", "host"), result["mode"], str(result["batch"]), _num(result["fps"], 2),
        _stat(result, "e2e"), _stat(result, "e2e", "p90"), _stat(result, "e2e", "p99"),
        _stat(result, "preprocess"), _stat(result, "inference"), _stat(result, "postprocess"),
        _stat(result, "upload"), _stat(result, "enqueue", digits=2), _stat(result, "gpu"),
        "{}/{}".format(result.get("cuda_graph_batches", 0), result["iterations"]),
        _num(None if bytes_per_frame is None else bytes_per_frame / 1e3, 1),
        _num(None if result["cv"] is None else result["cv"] * 100, 0, "%"),
        _num(power.get("avg_w"), 1), _num(power.get("j_per_frame"), 3), _num(result.get("fps_per_w"), 2),
        _num(card["fps"], 2) if card else "-",
    ]


def format_table(document: Dict[str, Any]) -> str:
    """The readable terminal table: one block per power mode, one row per (mode, batch)."""
    out = ["m2f-edge-bench  {}".format(document["created_utc"])]
    out += platform_summary(document)
    header = ["runner", "mode", "batch", "FPS", "e2e p50", "p90", "p99", "pre p50", "infer p50", "post p50",
              "upload", "enqueue", "gpu", "graph", "result KB", "CV", "W", "J/frame", "FPS/W", "card FPS"]
    for run in document["runs"]:
        out.append("")
        out.append("power mode: {}   jetson_clocks: {}   power: {}".format(
            _mode_label(run), {True: "on", False: "off", None: "n/a"}[run.get("jetson_clocks")],
            run.get("power_source") or "n/a"))
        rows = [header]
        rows += [_result_cells(result) for result in run["results"]]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for index, row in enumerate(rows):
            out.append("  ".join(cell.rjust(width) if i > 0 else cell.ljust(width)
                                 for i, (cell, width) in enumerate(zip(row, widths))))
            if index == 0:
                out.append("  ".join("-" * width for width in widths))
        for skipped in run.get("skipped_batches", []):
            out.append("skipped batch {}: {}".format(skipped["batch"], skipped["reason"]))
        for warning in run.get("warnings", []) + [w for r in run["results"] for w in r.get("warnings", [])]:
            out.append("WARNING: " + warning)
    out.append("")
    out.append("times in ms (e2e = what Segmenter.run does for a batch, through the runner named in the first "
               "column; in throughput mode its steps overlap and e2e includes queueing). host runner: pre/infer/post "
               "on the host clock, enqueue/gpu from the backend's CUDA events (n/a where it has none). device runner: "
               "pre/infer/post are the pipeline's CUDA-event stage times, upload the host staging of the frames, "
               "enqueue the host time to launch the GPU work, gpu its CUDA-event time; graph = batches that "
               "replayed a CUDA graph (one launch: no stage times for those); result KB = what one frame's Instances "
               "hold (cropped masks and arrays)")
    card = document.get("model_card")
    if card:
        out.append("model card ({}, {}, {}): {} batch {} = {:.2f} FPS -- {}".format(
            card["precision"], card["tool"], card["scope"], card["device"], card["batch"], card["fps"],
            COMPARABILITY_NOTE))
    elif document.get("device_key"):
        out.append("model card: no entry for {}".format(document["device_key"]))
    for skipped in document.get("skipped_power_modes", []):
        out.append("skipped power mode {}: {}".format(skipped["id"], skipped["reason"]))
    for warning in document.get("warnings", []):
        out.append("WARNING: " + warning)
    return "\n".join(out)


# ----------------------------------------------------------------------------- CSV
def csv_rows(document: Dict[str, Any]) -> List[Dict[str, Any]]:
    platform = document["platform"]
    host = platform["host"]
    jetson = platform.get("jetson") or {}
    nvml = platform.get("nvml") or {}
    core = value_of(host.get("m2f_edge_core"), {}) or {}
    ort = value_of(host.get("onnxruntime"))
    common = {
        "created_utc": document["created_utc"], "device_key": document.get("device_key"),
        "board_model": value_of(jetson.get("board_model")), "l4t": value_of(jetson.get("l4t")),
        "jetpack": value_of(jetson.get("jetpack")), "cpu_model": value_of(host.get("cpu_model")),
        "cpu_count": value_of(host.get("cpu_count")), "memory_gib": value_of(host.get("memory_gib")),
        "os": value_of(host.get("os")), "python": value_of(host.get("python")), "numpy": value_of(host.get("numpy")),
        "onnxruntime": ort["version"] if ort else None, "tensorrt": value_of(host.get("tensorrt")),
        "cuda": core.get("cuda_version"), "gpu_name": value_of(nvml.get("gpu_name")) or core.get("gpu_name"),
        "m2f_edge": document.get("m2f_edge_version"), "model": document["model"]["path"],
        "backend": document["model"].get("backend"), "frames": document["config"]["frames"],
    }
    rows = []
    for run in document["runs"]:
        mode = run.get("power_mode") or {}
        for result in run["results"]:
            power = result.get("power") or {}
            card = result.get("model_card") or {}
            row = {"runner": result.get("runner"), "result_bytes_per_frame": result.get("result_bytes_per_frame"), "power_mode_id": mode.get("id"), "power_mode_name": mode.get("name"),
                   "jetson_clocks": run.get("jetson_clocks"), "mode": result["mode"], "batch": result["batch"],
                   "iterations": result["iterations"], "frames_timed": result["frames"],
                   "elapsed_s": result["elapsed_s"], "fps": result["fps"], "cv": result["cv"]}
            for stage in CSV_STAGES:
                stats = result["latency_ms"].get(stage) or {}
                for key in STAT_KEYS:
                    row["{}_{}_ms".format(stage, key)] = stats.get(key)
            row.update({"avg_w": power.get("avg_w"), "energy_j": power.get("energy_j"),
                        "j_per_frame": power.get("j_per_frame"), "max_w": power.get("max_w"),
                        "fps_per_w": result.get("fps_per_w"), "power_source": power.get("total_source"),
                        "throttling": (power.get("throttling") or {}).get("detected"),
                        "card_device": card.get("device"), "card_batch": card.get("batch"),
                        "card_fps": card.get("fps")})
            row.update(common)
            rows.append(row)
    return rows


def write_csv(document: Dict[str, Any], path: str) -> None:
    rows = csv_rows(document)
    if not rows:
        raise ValueError("no results to write")
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


# ----------------------------------------------------------------------------- Markdown
def _md_value(value):
    if isinstance(value, (dict, list)):
        text = json.dumps(value, separators=(", ", ": "))
        return text if len(text) <= 160 else text[:157] + "..."
    return str(value)


def to_markdown(document: Dict[str, Any]) -> str:
    lines = ["# m2f-edge-bench result", "", "Run {} with `{}`.".format(document["created_utc"], document["command"]), ""]
    for line in platform_summary(document):
        lines.append("- " + line)
    lines += ["", "## Results", ""]
    for run in document["runs"]:
        lines.append("### Power mode {}, jetson_clocks {}, power from {}".format(
            _mode_label(run), {True: "on", False: "off", None: "n/a"}[run.get("jetson_clocks")],
            run.get("power_source") or "n/a"))
        lines.append("")
        lines.append("| runner | mode | batch | FPS | e2e p50 ms | e2e p90 | e2e p99 | preprocess p50 | inference p50 | "
                     "postprocess p50 | upload p50 | enqueue p50 | GPU p50 | graph batches | result KB | CV | W | J/frame | FPS/W | "
                     "model card FPS |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for result in run["results"]:
            lines.append("| {} |".format(" | ".join(_result_cells(result))))
        for warning in run.get("warnings", []) + [w for r in run["results"] for w in r.get("warnings", [])]:
            lines.append("")
            lines.append("> warning: " + warning)
        lines.append("")
    card = document.get("model_card")
    if card:
        lines.append("Model card ({}, {}, {}): {} batch {} = {:.2f} FPS. Note: {}.".format(
            card["precision"], card["tool"], card["scope"], card["device"], card["batch"], card["fps"],
            COMPARABILITY_NOTE))
        lines.append("")
    if document.get("warnings"):
        lines += ["## Warnings", ""] + ["- " + w for w in document["warnings"]] + [""]
    lines += ["## Platform facts", "", "| fact | value | source |", "|---|---|---|"]
    platform = document["platform"]
    for group in ("host", "jetson", "nvml"):
        for key, entry in (platform.get(group) or {}).items():
            if isinstance(entry, dict) and "source" in entry:
                value = entry["value"] if entry["value"] is not None else "n/a ({})".format(entry.get("note", ""))
                lines.append("| {}.{} | {} | {} |".format(group, key, _md_value(value).replace("|", "/"),
                                                         entry["source"]))
            else:
                lines.append("| {}.{} | {} | |".format(group, key, _md_value(entry)))
    for note in platform.get("notes", []):
        lines.append("")
        lines.append("> " + note)
    lines.append("")
    return "\n".join(lines)


def write_markdown(document: Dict[str, Any], path: str) -> None:
    with open(path, "w") as handle:
        handle.write(to_markdown(document))


# ----------------------------------------------------------------------------- plot
def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'm2f-edge[plot]'")
    return matplotlib


def write_plot(document: Dict[str, Any], path: str) -> None:
    """FPS and FPS per watt against batch size, one line per power mode and timing mode."""
    matplotlib = require_matplotlib()
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, (ax_fps, ax_eff) = plt.subplots(1, 2, figsize=(11, 4.2))
    any_power = False
    for run in document["runs"]:
        for mode in ("latency", "throughput"):
            results = sorted((r for r in run["results"] if r["mode"] == mode), key=lambda r: r["batch"])
            if not results:
                continue
            label = "{} / {}".format(_mode_label(run) if run.get("power_mode") else "this machine", mode)
            batches = [r["batch"] for r in results]
            ax_fps.plot(batches, [r["fps"] for r in results], marker="o", label=label)
            efficiency = [r.get("fps_per_w") for r in results]
            if any(v is not None for v in efficiency):
                any_power = True
                ax_eff.plot(batches, [float("nan") if v is None else v for v in efficiency], marker="o", label=label)
    batches_run = sorted(set(r["batch"] for run in document["runs"] for r in run["results"]))
    card = document.get("model_card")
    if card:
        batches_run = sorted(set(batches_run) | {card["batch"]})
        ax_fps.scatter([card["batch"]], [card["fps"]], marker="*", s=120, color="black",
                       label="model card (trtexec, inference only)")
    ax_fps.set_xlabel("batch size")
    ax_fps.set_ylabel("frames / s (end to end)")
    ax_fps.set_title("throughput")
    ax_fps.legend(fontsize=7)
    ax_eff.set_xlabel("batch size")
    ax_eff.set_ylabel("frames / s / W")
    ax_eff.set_title("efficiency" if any_power else "efficiency (no power reading on this machine)")
    if any_power:
        ax_eff.legend(fontsize=7)
    for axis in (ax_fps, ax_eff):
        axis.grid(True, alpha=0.3)
        if batches_run:
            axis.set_xticks(batches_run)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
