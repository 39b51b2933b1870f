"""m2f-edge serve --model M: serve a model through NVIDIA Triton Inference Server (dynamic batching)."""

from __future__ import annotations

import logging
import signal
import sys
import time

logger = logging.getLogger(__name__)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "serve", help="serve a model through Triton Inference Server (HTTP, gRPC, metrics; dynamic batching)",
        description="Serve a model with the Triton Inference Server bundled in nvidia-pytriton "
                    "(pip install 'm2f-edge[serve]'). Clients send uint8 frames [H,W,3] and get boxes, scores, labels "
                    "and masks as COCO RLE or bit-packed (see docs/serving.md); m2f_edge.Segmenter('grpc://HOST:PORT/"
                    "NAME') is such a client. Stops cleanly on SIGTERM or SIGINT.")
    parser.add_argument("-m", "--model", required=True, help="the model: .onnx, or a TensorRT .engine/.plan")
    parser.add_argument("--name", default="mask2former", help="the model's name on the server (mask2former)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="address to listen on (127.0.0.1; 0.0.0.0 for every interface, as in a container)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (8000; 0 = a free one)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (8001; 0 = a free one)")
    parser.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (8002; 0 = a free one)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="largest batch the dynamic batcher forms (default: the model's maximum, at least 8)")
    parser.add_argument("--max-queue-delay-us", type=int, default=2000,
                        help="how long a request may wait for others to batch with, in microseconds (2000)")
    parser.add_argument("--instances", type=int, default=1, help="model instances, each its own Segmenter (1)")
    parser.add_argument("--token", default=None,
                        help="protect the shared-memory, repository, statistics, trace and logging APIs: clients "
                             "send the token in the 'triton-access-token' header")
    parser.add_argument("--backend", default="auto", help="auto, onnxruntime[-cpu|-cuda|-tensorrt] or tensorrt")
    parser.add_argument("--spec", help="a TAO experiment spec (YAML) or sidecar JSON with class names, thresholds")
    parser.add_argument("-t", "--threshold", type=float, default=None,
                        help="default score threshold (requests may set their own)")
    parser.add_argument("--max-instances", type=int, default=100, help="default most instances per frame (100)")
    parser.add_argument("--resize", choices=["stretch", "letterbox"], default="stretch", help="see m2f-edge segment")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per instance (0 = all cores)")
    parser.add_argument("--log", metavar="FILE", help="write the server's log to FILE instead of stderr")
    return parser


def run(args) -> int:
    from ..serving import prepare_server, segmenter_options

    options = segmenter_options(backend=args.backend, score_threshold=args.threshold,
                                max_instances=args.max_instances, resize=args.resize, spec=args.spec,
                                threads=args.threads)
    server = prepare_server(args.model, name=args.name, options=options, max_batch=args.max_batch,
                            max_queue_delay_us=args.max_queue_delay_us, instances=args.instances,
                            address=args.address, http_port=args.http_port, grpc_port=args.grpc_port,
                            metrics_port=args.metrics_port, token=args.token, log=args.log)
    stop_requested = []

    def request_stop(signum, _frame):
        stop_requested.append(signum)

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        server.wait_ready(models=[args.name], timeout_s=600)
        print("serving {} ({}): {}  {}  metrics http://{}:{}/metrics".format(
            args.name, args.model, server.url("grpc", args.name), server.url("http", args.name),
            server.address, server.metrics_port), flush=True)
        while not stop_requested and server.running():
            time.sleep(0.2)
        if not stop_requested:
            print("m2f-edge serve: error: tritonserver exited unexpectedly", file=sys.stderr)
            return 1
        logger.info("stopping (signal %d)", stop_requested[0])
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
