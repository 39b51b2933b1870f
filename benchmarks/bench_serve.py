#!/usr/bin/env python3
"""Throughput and latency of m2f-edge serve (Triton, loopback) against the in-process Segmenter on the same model.

    python benchmarks/bench_serve.py                          # tiny generated model at 544x960, 1280x720 frames
    python benchmarks/bench_serve.py --model model.onnx --clients 8 --batch 8

In-process: Segmenter.run_batch over the frames in batches of --batch (what one process with the model
achieves). Served: --clients threads, each a remote Segmenter (grpc://127.0.0.1) sending its frames one request
at a time, so that the server's dynamic batcher forms batches of up to --batch; with and without system
shared memory. Prints frames/s, the ratio to in-process, per-request p50/p99 latency, and the response bytes
per frame: compact masks (COCO RLE, bit-packed) against the float32 mask maps a network-only model returns.
Needs nvidia-pytriton (pip install 'm2f-edge[serve]'). Each timing is the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import m2f_edge  # noqa: E402
from m2f_edge.serving import prepare_server, segmenter_options  # noqa: E402


def parse_size(text):
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def make_frames(count, size, seed=0):
    """Coloured rectangles on grey, as the tiny model segments them."""
    width, height = size
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        image = np.full((height, width, 3), 128, np.uint8)
        for color in [(30, 30, 230), (40, 220, 40), (220, 40, 30)]:
            x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
            image[y0:y0 + height // 4, x0:x0 + width // 4] = color
        frames.append(image)
    return frames


def in_process(model, frames, batch, threads, repeat):
    with m2f_edge.Segmenter(model, threads=threads) as seg:
        seg.run_batch(frames[:batch])  # warm-up
        best = None
        for _ in range(repeat):
            start = time.perf_counter()
            for i in range(0, len(frames), batch):
                seg.run_batch(frames[i:i + batch])
            elapsed = time.perf_counter() - start
            best = elapsed if best is None else min(best, elapsed)
    return len(frames) / best


def served(url, frames, clients, repeat):
    """frames/s of `clients` concurrent remote Segmenters, and every request's latency (s)."""
    remotes = [m2f_edge.Segmenter(url) for _ in range(clients)]
    try:
        for remote in remotes:
            remote.run(frames[0])  # warm-up: connection, shared-memory region
        best, latencies = None, []
        for _ in range(repeat):
            shares = [frames[k::clients] for k in range(clients)]
            times = [[] for _ in range(clients)]
            barrier = threading.Barrier(clients + 1)

            def work(k):
                barrier.wait()
                for frame in shares[k]:
                    began = time.perf_counter()
                    remotes[k].run(frame)
                    times[k].append(time.perf_counter() - began)

            threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
            for thread in threads:
                thread.start()
            barrier.wait()
            start = time.perf_counter()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - start
            if best is None or elapsed < best:
                best, latencies = elapsed, [t for per in times for t in per]
        return len(frames) / best, np.array(latencies)
    finally:
        for remote in remotes:
            remote.close()


def response_bytes(server, model_name, frame, network_outputs):
    """Bytes of one frame's response with each mask format, and of the network's own float32 outputs."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient("127.0.0.1:{}".format(server.grpc_port))
    request = grpcclient.InferInput("frames", [1] + list(frame.shape), "UINT8")
    request.set_data_from_numpy(frame[None])
    sizes = {}
    for masks in ("rle", "bits"):
        result = client.infer(model_name, [request], parameters={"masks": masks})
        total = 0
        for output in result.get_response().outputs:
            array = result.as_numpy(output.name)
            total += sum(len(v) for v in array.ravel()) if array.dtype == object else array.nbytes
        sizes[masks] = total
        sizes["instances"] = int(result.as_numpy("num_instances")[0, 0])
    client.close()
    sizes["network"] = sum(int(np.prod(shape)) * 4 for shape in network_outputs)
    return sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="ONNX model or TensorRT engine (default: a tiny generated model)")
    parser.add_argument("--net-size", default="960x544", help="tiny model's input WxH (960x544, TAO's default)")
    parser.add_argument("--size", default="1280x720", help="frame WxH (1280x720)")
    parser.add_argument("--frames", type=int, default=96, help="frames per timing (96)")
    parser.add_argument("--batch", type=int, default=4, help="in-process batch and the server's max batch (4)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (4)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads of the Segmenter, both sides (0 = all)")
    parser.add_argument("--queue-delay-us", type=int, default=5000, help="server's max queue delay (5000)")
    parser.add_argument("--repeat", type=int, default=3, help="timings per measurement; the best is kept (3)")
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="bench_serve_")
    model = args.model
    if model is None:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from tiny_models import make_deployable_model

        width, height = parse_size(args.net_size)
        model = make_deployable_model(os.path.join(workdir, "tiny.onnx"), height=height, width=width)
    frames = make_frames(args.frames, parse_size(args.size))
    with m2f_edge.Segmenter(model) as seg:
        shapes = [tuple(seg.backend.output_shapes.get(n) or ()) for n in seg.backend.output_names]
        network_outputs = [tuple(1 if not isinstance(d, int) else d for d in shape) for shape in shapes]

    print("model {}  frames {} x {}  batch {}  clients {}  threads {}  cores {}".format(
        os.path.basename(model), args.frames, args.size, args.batch, args.clients, args.threads, os.cpu_count()))
    local_fps = in_process(model, frames, args.batch, args.threads, args.repeat)
    print("in-process Segmenter.run_batch(batch={}): {:.1f} frames/s".format(args.batch, local_fps))

    server = prepare_server(model, options=segmenter_options(threads=args.threads), max_batch=args.batch,
                            max_queue_delay_us=args.queue_delay_us, http_port=0, grpc_port=0, metrics_port=0,
                            log=os.path.join(workdir, "server.log"))
    server.start()
    try:
        server.wait_ready(models=["mask2former"], timeout_s=300)
        for label, query in (("shared memory", "?shm=1"), ("over the socket", "?shm=0")):
            fps, latencies = served(server.url("grpc", "mask2former") + query, frames, args.clients, args.repeat)
            print("served, gRPC, {}: {:.1f} frames/s = {:.2f}x in-process; latency p50 {:.1f} ms, p99 {:.1f} ms".format(
                label, fps, fps / local_fps, 1000 * np.percentile(latencies, 50), 1000 * np.percentile(latencies, 99)))
        sizes = response_bytes(server, "mask2former", frames[0], network_outputs)
        print("response bytes per frame ({} instances): RLE {}, bit-packed {}, the network's float32 outputs {} "
              "({:.0f}x the RLE)".format(sizes["instances"], sizes["rle"], sizes["bits"], sizes["network"],
                                         sizes["network"] / max(sizes["rle"], 1)))
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
