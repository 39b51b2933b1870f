"""``m2f-edge-bench``: FPS, latency and energy of the whole pipeline per power mode and batch size.

    m2f-edge-bench --model mask2former_swint.engine --batch 1,8 --duration 20 --json run.json
    sudo m2f-edge-bench --model m.engine --power-modes all --lock-clocks --markdown modes.md
    m2f-edge-bench --compare before.json after.json
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time
from typing import Any, Dict, List, Optional

from .. import telemetry
from ..telemetry import jetson as jetson_facts
from ..telemetry.facts import value_of
from . import compare as compare_mod
from . import model_card, reports
from .frames import frames_from_args
from .runner import BenchConfig, run_latency, run_throughput, warnings_for


class UsageError(ValueError):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2f-edge-bench",
        description="Benchmark the whole Mask2Former pipeline (preprocess, inference, post-processing) per batch "
                    "size and power mode: FPS, latency percentiles per stage, watts and joules per frame.")
    parser.add_argument("--model", help="model file (.onnx or .engine), or demo (the shipped demo model)")
    parser.add_argument("--batch", default="1", help="comma-separated batch sizes (default: 1)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input-size", metavar="WxH", help="synthetic frames of this size (default: 1280x720)")
    source.add_argument("--frames", metavar="VIDEO_OR_DIR", help="real frames from a video file or an image folder")
    parser.add_argument("--warmup", type=float, default=2.0, metavar="SECONDS", help="warm-up time (default: 2)")
    window = parser.add_mutually_exclusive_group()
    window.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="timed window per measurement (default: 10)")
    window.add_argument("--iterations", type=int, default=None, metavar="N", help="timed batches per measurement")
    parser.add_argument("--mode", choices=["latency", "throughput", "both"], default="both",
                        help="latency: one batch at a time; throughput: stages overlapped (default: both)")
    parser.add_argument("--queue-depth", type=int, default=2, help="queue length between stages in throughput mode")
    parser.add_argument("--power-modes", default="current", metavar="current|all|ID,...",
                        help="nvpmodel modes to run in (Jetson, needs root for anything but current); the original "
                             "mode and clocks are restored at the end, also after an error or Ctrl-C")
    parser.add_argument("--lock-clocks", action="store_true",
                        help="run jetson_clocks after switching to each power mode (needs root)")
    parser.add_argument("--settle", type=float, default=3.0, metavar="SECONDS",
                        help="wait after a power-mode switch before measuring (default: 3)")
    parser.add_argument("--backend", default="auto", help="Segmenter backend (default: auto)")
    parser.add_argument("--runner", choices=["auto", "host", "device"], default="auto",
                        help="which runner to time: the one Segmenter.run uses (auto: device for TensorRT "
                             "engines, else host), or force host (CPU stages around the backend) or device "
                             "(the whole path on the GPU) to compare both on one engine")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for pre/post-processing (0 = all)")
    parser.add_argument("--no-jtop", action="store_true", help="do not use jetson-stats even when installed")
    parser.add_argument("--sample-period", type=float, default=0.1, metavar="SECONDS",
                        help="power sampling period (default: 0.1)")
    parser.add_argument("--json", metavar="F", help="write every number and platform fact as JSON")
    parser.add_argument("--csv", metavar="F", help="write one CSV row per measurement")
    parser.add_argument("--markdown", metavar="F", help="write a Markdown report")
    parser.add_argument("--plot", metavar="F.png", help="plot FPS and FPS/W per power mode and batch (matplotlib)")
    parser.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="print ratios B/A of two results")
    parser.add_argument("--capture-sysroot", metavar="DIR",
                        help="copy the system files the telemetry reads into DIR (for a bug report; replay with "
                             "M2F_SYSROOT=DIR) and exit")
    return parser


def parse_batches(text: str) -> List[int]:
    try:
        batches = [int(tok) for tok in text.split(",") if tok.strip()]
    except ValueError:
        raise UsageError("--batch must be comma-separated positive integers, e.g. 1,8,16; got {!r}".format(text))
    if not batches or any(b < 1 for b in batches):
        raise UsageError("--batch must be comma-separated positive integers, e.g. 1,8,16; got {!r}".format(text))
    return sorted(set(batches), key=batches.index)


def plan_power_modes(spec: str, controller) -> Optional[List[int]]:
    """None = measure in the current mode without switching; else the mode ids to visit."""
    spec = spec.strip().lower()
    if spec == "current":
        return None
    if not controller.available():
        raise UsageError("--power-modes {} needs nvpmodel on PATH: power modes exist only on a Jetson".format(spec))
    known = [mode["id"] for mode in controller.modes()]
    if spec == "all":
        if not known:
            raise UsageError("--power-modes all: cannot list the power modes (/etc/nvpmodel.conf unreadable)")
        return known
    try:
        wanted = [int(tok) for tok in spec.split(",") if tok.strip()]
    except ValueError:
        raise UsageError("--power-modes must be current, all or comma-separated mode ids; got {!r}".format(spec))
    unknown = [m for m in wanted if known and m not in known]
    if unknown or not wanted:
        raise UsageError("--power-modes: unknown mode id(s) {}; this board has {}".format(unknown, known))
    return wanted


def make_segmenter(args):
    try:
        from .. import Segmenter
    except ImportError as error:
        raise RuntimeError("m2f_edge.Segmenter is not available in this build ({})".format(error))
    from ..demo import MODEL_NAME

    if args.model != MODEL_NAME and not os.path.exists(args.model):
        raise UsageError("--model: {!r} does not exist".format(args.model))
    return Segmenter(args.model, backend=args.backend, threads=args.threads, runner=args.runner)


def describe_model(segmenter, path: str) -> Dict[str, Any]:
    backend = getattr(segmenter, "backend", None)
    size = getattr(segmenter, "input_size", None)
    batch_range = getattr(segmenter, "batch_range", None)
    dtype = getattr(segmenter, "input_dtype", None)
    return {"path": path, "backend": getattr(backend, "name", None if backend is None else str(backend)),
            "contract": getattr(segmenter, "contract", None),
            "input_size": None if size is None else [int(v) for v in size],
            "input_dtype": None if dtype is None else str(getattr(dtype, "name", dtype)),
            "batch_range": None if batch_range is None else list(batch_range)}


def _batch_allowed(batch: int, batch_range) -> Optional[str]:
    if not batch_range:
        return None
    low, high = batch_range
    if batch < (low or 1) or (high is not None and batch > high):
        return "the model accepts batch sizes {}..{}".format(low, "any" if high is None else high)
    return None


def measure_run(segmenter, pool, batches, modes, config, power_source, platform, device, sample_period,
                log=print) -> Dict[str, Any]:
    """One power mode: every batch size in every timing mode, power sampled throughout."""
    on_jetson = platform.get("jetson") is not None
    mode_fact = jetson_facts.current_power_mode() if on_jetson else None
    clocks_fact = jetson_facts.jetson_clocks_state() if on_jetson else None
    clocks_locked = value_of(clocks_fact)
    run = {"power_mode": value_of(mode_fact), "jetson_clocks": clocks_locked,
           "power_source": getattr(power_source, "total_source", None) if power_source is not None else None,
           "results": [], "skipped_batches": [], "warnings": []}
    if on_jetson:
        run["clocks_at_start"] = {"gpu": value_of(jetson_facts.gpu_clock()), "emc": value_of(jetson_facts.emc_clock()),
                                  "temperatures": value_of(jetson_facts.temperatures())}
        if clocks_locked is False:
            run["warnings"].append("clocks are not locked (jetson_clocks off): DVFS moves the clocks with load, so "
                                   "numbers vary more; lock them with `sudo jetson_clocks` or --lock-clocks")
    sampler = None
    if power_source is not None:
        sampler = telemetry.PowerSampler(power_source, period_s=sample_period).start()
    try:
        for batch in batches:
            reason = _batch_allowed(batch, getattr(segmenter, "batch_range", None))
            if reason:
                run["skipped_batches"].append({"batch": batch, "reason": reason})
                continue
            for mode in modes:
                log("  measuring {} batch {} ...".format(mode, batch))
                runner = run_latency if mode == "latency" else run_throughput
                result = runner(segmenter, pool, batch, config)
                start, end = result.pop("window")
                # a source without a power monitor still samples clocks and temperatures (throttling)
                power = sampler.summary(start, end, result["frames"], clocks_locked) if sampler is not None else None
                result["power"] = power
                result["fps_per_w"] = (result["fps"] / power["avg_w"]) if power and power["avg_w"] else None
                result["model_card"] = model_card.card_entry(device, batch)
                result["warnings"] = warnings_for(result)
                if power and power["throttling"]["detected"]:
                    result["warnings"].append("{} batch {}: throttling: {}".format(
                        mode, batch, power["throttling"]["note"]))
                run["results"].append(result)
    finally:
        if sampler is not None:
            sampler.stop()
            for error in sampler.errors[:3]:
                run["warnings"].append("power sampling error: {}".format(error))
    return run


def run_benchmark(args, log=print) -> Dict[str, Any]:
    batches = parse_batches(args.batch)
    modes = ["latency", "throughput"] if args.mode == "both" else [args.mode]
    if args.iterations is not None and args.iterations < 1:
        raise UsageError("--iterations must be >= 1")
    if args.sample_period <= 0:
        raise UsageError("--sample-period must be > 0")
    duration = args.duration if args.duration is not None else 10.0
    try:
        config = BenchConfig(warmup_s=args.warmup, duration_s=duration, iterations=args.iterations,
                             queue_depth=args.queue_depth)
        pool = frames_from_args(args.input_size, args.frames)
    except ValueError as error:
        raise UsageError(str(error))
    if args.plot:
        try:
            reports.require_matplotlib()
        except RuntimeError as error:  # say so before a long run, not after it
            raise UsageError(str(error))
    controller = telemetry.PowerModeController()
    mode_plan = plan_power_modes(args.power_modes, controller)

    platform = telemetry.collect_platform(use_jtop=not args.no_jtop)
    device = model_card.device_key(platform)
    segmenter = make_segmenter(args)
    power_source, power_notes, handles = telemetry.open_power_source(use_jtop=not args.no_jtop)
    warnings = []
    if power_source is None or not getattr(power_source, "has_power", True):
        warnings.append("no power reading on this machine, so watts, J/frame and FPS/W are n/a ({})".format(
            "; ".join(note for note in power_notes if note) or "no Jetson power monitor and no NVIDIA GPU"))
    else:
        warnings.extend(note for note in power_notes if note)
    document = {
        "schema_version": 1, "tool": "m2f-edge-bench",
        "m2f_edge_version": value_of(platform["host"]["m2f_edge_core"], {}).get("version"),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0, tzinfo=None).isoformat()
        + "Z",
        "command": " ".join(shlex.quote(a) for a in ["m2f-edge-bench"] + list(args.argv)),
        "config": dict(config.as_dict(), batches=batches, modes=modes, frames=pool.description,
                       frame_size=list(pool.frame_size), power_modes=args.power_modes),
        "model": describe_model(segmenter, args.model), "platform": platform, "device_key": device,
        "model_card": model_card.card_entry(device), "runs": [], "skipped_power_modes": [],
        "power_mode_commands": [], "warnings": warnings,
    }
    try:
        if mode_plan is None:
            document["runs"].append(measure_run(segmenter, pool, batches, modes, config, power_source, platform,
                                                device, args.sample_period, log))
        else:
            with telemetry.preserved_power_state(controller) as control:
                for mode_id in mode_plan:
                    try:
                        log("power mode {} ...".format(mode_id))
                        control.set_mode(mode_id)
                        if args.lock_clocks:
                            control.lock_clocks()
                    except telemetry.PowerModeError as error:
                        document["skipped_power_modes"].append({"id": mode_id, "reason": str(error)})
                        log("  skipped: {}".format(error))
                        continue
                    if args.settle > 0:
                        time.sleep(args.settle)
                    document["runs"].append(measure_run(segmenter, pool, batches, modes, config, power_source,
                                                        platform, device, args.sample_period, log))
            if not document["runs"]:
                raise RuntimeError("no power mode could be set: " + "; ".join(
                    "{}: {}".format(s["id"], s["reason"]) for s in document["skipped_power_modes"]))
    finally:
        document["power_mode_commands"] = list(controller.log)
        for handle in handles:
            handle.close()
    return document


def write_outputs(document, args) -> None:
    if args.json:
        reports.write_json(document, args.json)
    if args.csv:
        reports.write_csv(document, args.csv)
    if args.markdown:
        reports.write_markdown(document, args.markdown)
    if args.plot:
        reports.write_plot(document, args.plot)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        if args.compare:
            a_path, b_path = args.compare
            a, b = reports.read_json(a_path), reports.read_json(b_path)
            print(compare_mod.format_comparison(a_path, b_path, compare_mod.compare(a, b)))
            return 0
        if args.capture_sysroot:
            from ..telemetry.capture import capture
            counts = capture(args.capture_sysroot)
            print("captured {} files into {} ({} unreadable, e.g. debugfs without root); replay with "
                  "M2F_SYSROOT={}".format(counts["copied"], args.capture_sysroot, counts["unreadable"],
                                          args.capture_sysroot))
            return 0
        if not args.model:
            parser.error("--model is required (or --compare A.json B.json, or --capture-sysroot DIR)")
        document = run_benchmark(args, log=lambda text: print(text, file=sys.stderr))
        print(reports.format_table(document))
        write_outputs(document, args)
        return 0
    except UsageError as error:
        print("m2f-edge-bench: error: {}".format(error), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        restored = " (power mode and clocks restored)" if args.power_modes.strip().lower() != "current" else ""
        print("m2f-edge-bench: interrupted{}".format(restored), file=sys.stderr)
        return 130
    except (RuntimeError, ValueError, OSError) as error:
        print("m2f-edge-bench: error: {}".format(error), file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
