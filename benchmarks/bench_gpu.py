#!/usr/bin/env python3
"""GPU kernels against their CPU twins and against what users would otherwise run (OpenCV + numpy,
CuPy when installed), in one process, on the current GPU. Prints times and ratios; asserts nothing.

  preprocess  1920x1080 BGR uint8 -> 800x800 float32/float16, against the copy-bandwidth bound: the
              time to read the frame and write the tensor at this device's measured device-to-device
              copy bandwidth (the issue's target: within 2x of it)
  deployable  100 queries (800x800 float32 masks) -> 1920x1080 frame masks, boxes, areas
  raw head    100 queries x (1 + 1) classes, 200x200 mask logits -> 1920x1080
  outputs     with --engine: a TensorRT engine's outputs written to mapped host memory
              (set_mapped_outputs(True): the GPU writes through I/O coherency on Jetson) against device
              buffers plus one copy to the host, each ending with the outputs in host memory

Usage: python benchmarks/bench_gpu.py [--repeat N] [--kept N] [--engine ENGINE] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def timed(fn, repeat, warmup=3):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3  # ms


def row(name, ms, reference_ms=None, note=""):
    ratio = "" if reference_ms is None else "{:8.2f}x".format(reference_ms / ms if ms > 0 else float("inf"))
    print("  {:<52s} {:9.3f} ms {} {}".format(name, ms, ratio, note))


def copy_bandwidth(gpu, repeat):
    """Bytes per second of a device-to-device copy (read + write counted), 256 MiB buffers."""
    n = 64 << 20
    a, b = gpu.DeviceArray((n,), "float32"), gpu.DeviceArray((n,), "float32")
    ms = timed(lambda: gpu.copy(b, a), repeat)
    return 2 * 4 * n / (ms / 1e3)


def opencv_preprocess(frame, size):
    import cv2

    rgb = cv2.cvtColor(cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    x = (rgb.astype(np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None]


def bench_preprocess(core, gpu, repeat, results):
    print("\npreprocess 1920x1080 bgr uint8 -> 800x800 (stretch)")
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    d_frame = gpu.DeviceArray.from_numpy(frame)
    bandwidth = copy_bandwidth(gpu, repeat)
    for dtype in ("float32", "float16"):
        out = gpu.DeviceArray((1, 3, 800, 800), dtype)
        gpu_ms = timed(lambda: gpu.preprocess(d_frame, out), repeat)
        bytes_moved = frame.nbytes + out.nbytes
        bound_ms = bytes_moved / bandwidth * 1e3
        host_out = np.empty((1, 3, 800, 800), dtype)
        cpu_ms = timed(lambda: core.preprocess(frame, host_out), max(3, repeat // 5))
        row("GPU kernel ({})".format(dtype), gpu_ms, None,
            "= {:.2f}x the copy-bandwidth bound {:.3f} ms ({:.0f} GB/s)".format(gpu_ms / bound_ms, bound_ms,
                                                                               bandwidth / 1e9))
        row("CPU twin _core.preprocess ({})".format(dtype), cpu_ms, None,
            "GPU is {:.1f}x faster".format(cpu_ms / gpu_ms))
        results["preprocess_" + dtype] = {"gpu_ms": gpu_ms, "bound_ms": bound_ms, "cpu_ms": cpu_ms,
                                          "copy_bandwidth_gbps": bandwidth / 1e9}
    try:
        cv_ms = timed(lambda: opencv_preprocess(frame, (800, 800)), max(3, repeat // 5))
        row("OpenCV resize + cvtColor + numpy normalise", cv_ms, None,
            "GPU float32 is {:.1f}x faster".format(cv_ms / results["preprocess_float32"]["gpu_ms"]))
        results["preprocess_opencv_ms"] = cv_ms
    except ImportError:
        print("  (OpenCV not installed: skipped)")
    try:
        import cupy as cp
        import cupyx.scipy.ndimage as ndi

        c_frame = cp.asarray(frame)

        def cupy_pre():
            x = c_frame[:, :, ::-1].astype(cp.float32)
            x = ndi.zoom(x, (800 / 1080, 800 / 1920, 1), order=1)
            x = (x / 255.0 - cp.asarray(MEAN)) / cp.asarray(STD)
            cp.ascontiguousarray(x.transpose(2, 0, 1))
            cp.cuda.Stream.null.synchronize()

        cupy_ms = timed(cupy_pre, repeat)
        row("CuPy (zoom order=1 + normalise)", cupy_ms, None,
            "GPU float32 is {:.1f}x faster".format(cupy_ms / results["preprocess_float32"]["gpu_ms"]))
        results["preprocess_cupy_ms"] = cupy_ms
    except ImportError:
        print("  (CuPy not installed: skipped)")


def deployable_inputs(rng, k, h, w, kept):
    yy, xx = np.mgrid[0:h, 0:w]
    masks = np.zeros((k, h, w), np.float32)
    for i in range(k):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(20, 200)
        masks[i] = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
    scores = np.concatenate([rng.uniform(0.6, 1.0, kept), rng.uniform(0.0, 0.4, k - kept)]).astype(np.float32)
    rng.shuffle(scores)
    return masks, scores, np.zeros(k, np.int32)


def bench_postprocess(core, gpu, repeat, kept_counts, results):
    rng = np.random.default_rng(1)
    transform = core.ResizeTransform("stretch", 1080, 1920, 800, 800)
    for kept in kept_counts:
        print("\ndeployable post-processing: 100 queries at 800x800 -> 1920x1080, {} above threshold".format(kept))
        masks, scores, classes = deployable_inputs(rng, 100, 800, 800, kept)
        d = [gpu.DeviceArray.from_numpy(a) for a in (masks, scores, classes)]
        times = {form: timed(lambda: gpu.postprocess_deployable(*d, transform, masks_to=form), repeat)
                 for form in ("device", "packed", "host")}
        gpu_ms = times["device"]
        cpu_ms = timed(lambda: core.postprocess_deployable(masks, scores, classes, transform), max(3, repeat // 5))
        host_result = gpu.postprocess_deployable(*d, transform, masks_to="host")
        result_bytes = sum(v.nbytes for v in host_result.values() if isinstance(v, np.ndarray))
        row("GPU, cropped masks left on the device", times["device"], None)
        row("GPU, bit-packed crops copied to the host", times["packed"], None)
        row("GPU, uint8 crops copied to the host", times["host"], None,
            "{:.2f} MB of results per frame ({} instances; full masks: {:.0f} MB)".format(
                result_bytes / 1e6, len(host_result["scores"]), len(host_result["scores"]) * 1080 * 1920 / 1e6))
        row("CPU twin", cpu_ms, None, "GPU (host crops) is {:.1f}x faster".format(cpu_ms / times["host"]))
        naive_ms = None
        try:
            import cv2

            def opencv_post():
                order = np.argsort(-scores, kind="stable")
                order = order[scores[order] >= 0.5]
                [cv2.resize(masks[i], (1920, 1080), interpolation=cv2.INTER_LINEAR) > 0.5 for i in order]

            naive_ms = timed(opencv_post, max(3, repeat // 5))
            row("numpy sort + cv2.resize per kept mask (no boxes)", naive_ms, None,
                "GPU is {:.1f}x faster".format(naive_ms / gpu_ms))
        except ImportError:
            pass
        results["deployable_kept{}".format(kept)] = {"gpu_device_ms": times["device"], "gpu_packed_ms": times["packed"],
                                                     "gpu_host_ms": times["host"], "cpu_ms": cpu_ms,
                                                     "opencv_ms": naive_ms, "result_bytes_per_frame": result_bytes}

    print("\nraw-head post-processing: 100 queries, 2 columns, 200x200 logits -> 800x800 -> 1920x1080")
    yy, xx = np.mgrid[0:200, 0:200]
    mask_logits = np.stack([6 * (1 - np.hypot(yy - rng.uniform(0, 200), xx - rng.uniform(0, 200)) /
                                 rng.uniform(10, 60)) for _ in range(100)]).astype(np.float32)
    class_logits = rng.normal(0, 2, (100, 2)).astype(np.float32)
    d_cls, d_masks = gpu.DeviceArray.from_numpy(class_logits), gpu.DeviceArray.from_numpy(mask_logits)
    times = {form: timed(lambda: gpu.postprocess_raw(d_cls, d_masks, transform, masks_to=form), repeat)
             for form in ("device", "packed", "host")}
    cpu_ms = timed(lambda: core.postprocess_raw(class_logits, mask_logits, transform), max(3, repeat // 5))
    n = len(core.postprocess_raw(class_logits, mask_logits, transform)["scores"])
    row("GPU, cropped masks left on the device ({} kept)".format(n), times["device"], None)
    row("GPU, bit-packed crops copied to the host", times["packed"], None)
    row("GPU, uint8 crops copied to the host", times["host"], None)
    row("CPU twin", cpu_ms, None, "GPU (host crops) is {:.1f}x faster".format(cpu_ms / times["host"]))
    results["raw"] = {"gpu_device_ms": times["device"], "gpu_packed_ms": times["packed"], "gpu_host_ms": times["host"],
                      "cpu_ms": cpu_ms, "kept": n}

    print("\ninstance map of 20 frame masks at 1920x1080")
    frame_masks = (rng.uniform(0, 1, (20, 1080, 1920)) < 0.05).astype(np.uint8)
    d_frame_masks = gpu.DeviceArray.from_numpy(frame_masks)
    gpu_ms = timed(lambda: gpu.instance_map(d_frame_masks), repeat)
    cpu_ms = timed(lambda: core.instance_map(frame_masks), max(3, repeat // 5))
    row("GPU (result left on the device)", gpu_ms, None)
    row("CPU twin", cpu_ms, None, "GPU is {:.1f}x faster".format(cpu_ms / gpu_ms))
    results["instance_map"] = {"gpu_ms": gpu_ms, "cpu_ms": cpu_ms}


def bench_engine_outputs(core, engine_path, repeat, results):
    """infer() + the outputs in host memory: mapped outputs read in place (one host copy) against
    device outputs copied back (to_numpy). Two engines, so that no pooled buffer crosses over."""
    print("TensorRT outputs ({}):".format(engine_path))
    timings = {}
    for mapped in (False, True):
        engine = core.tensorrt.Engine(engine_path)
        engine.set_mapped_outputs(mapped)
        info = [t for t in engine.tensors if t["mode"] == "input"][0]
        shape = tuple(info.get("min_shape") or info["shape"])
        inputs = {info["name"]: np.zeros(shape, np.float16 if info["dtype"] == "float16" else np.float32)}

        def run():
            outputs = engine.infer(inputs)
            return [np.array(o.numpy()) if mapped else o.to_numpy() for o in outputs.values()]

        timings[mapped] = timed(run, repeat)
    row("device buffers + one copy each", timings[False])
    row("mapped outputs, read in place", timings[True], timings[False],
        "(>1x: mapped is faster on this device)")
    results["engine_outputs"] = {"device_copy_ms": timings[False], "mapped_ms": timings[True]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--kept", type=int, nargs="+", default=[20, 100], help="instances above threshold")
    parser.add_argument("--engine", help="a TensorRT engine: compare mapped outputs with device buffers + a copy")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)

    from m2f_edge import _core as core

    gpu = core.gpu
    if not gpu.available():
        print("bench_gpu: no usable GPU ({})".format(gpu.device_info().get("error")), file=sys.stderr)
        return 2
    if core.build_info().get("cuda_emulation"):
        print("bench_gpu: this is the CUDA emulation build (M2F_CUDA=EMULATE, kernels on the CPU): it has no "
              "GPU timings to give", file=sys.stderr)
        return 2
    info = gpu.device_info()
    print("device: {} (compute {}.{}, {}), m2f_edge {}".format(
        info["name"], info["compute_capability"][0], info["compute_capability"][1],
        "integrated, zero-copy buffers" if info["zero_copy"] else "discrete", core.build_info()["version"]))
    results = {"device": info["name"]}
    bench_preprocess(core, gpu, args.repeat, results)
    bench_postprocess(core, gpu, args.repeat, args.kept, results)
    if args.engine:
        bench_engine_outputs(core, args.engine, args.repeat, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
