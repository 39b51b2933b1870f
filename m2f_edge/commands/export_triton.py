"""m2f-edge export-triton MODEL -o REPO: a Triton model repository (ensemble of pre/post-processing around the
network) for production GPU servers."""

from __future__ import annotations


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export-triton", help="write a Triton model repository: an ensemble of pre/post-processing around the network",
        description="Write a Triton Inference Server model repository: <name> (an ensemble taking uint8 frames and "
                    "giving boxes, scores, labels and COCO-RLE or bit-packed masks, as m2f-edge serve does), "
                    "<name>_preprocess and <name>_postprocess (Python backend; m2f_edge must be installed in its "
                    "Python) and <name>_network (onnxruntime_onnx, tensorrt_plan from --engine, or with "
                    "--python-runtime a Python-backend model running the ONNX through ONNX Runtime).")
    parser.add_argument("model", help="the .onnx model (contract and settings are read from it)")
    parser.add_argument("-o", "--out", required=True, metavar="REPO", help="the repository folder to write")
    parser.add_argument("--name", default="mask2former", help="the ensemble's name (mask2former)")
    parser.add_argument("--engine", help="a TensorRT engine built from MODEL: the network becomes tensorrt_plan")
    parser.add_argument("--python-runtime", action="store_true",
                        help="run the network through ONNX Runtime inside the Python backend (what the server "
                             "bundled in nvidia-pytriton can run: it has no onnxruntime or tensorrt backend)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="max_batch_size of every model (default: the model's largest batch, at most 8)")
    parser.add_argument("--max-queue-delay-us", type=int, default=2000, help="dynamic batching delay (2000 us)")
    parser.add_argument("--instances", type=int, default=1, help="instances of each model (1)")
    parser.add_argument("--kind", choices=["gpu", "cpu"], default="gpu", help="instance kind of the network (gpu)")
    parser.add_argument("--python-env", metavar="DIR",
                        help="EXECUTION_ENV_PATH of the Python-backend models (a Python environment with m2f_edge)")
    parser.add_argument("--spec", help="a TAO experiment spec (YAML) or sidecar JSON with class names, thresholds")
    parser.add_argument("-t", "--threshold", type=float, default=None, help="default score threshold")
    parser.add_argument("--max-instances", type=int, default=100, help="default most instances per frame (100)")
    parser.add_argument("--resize", choices=["stretch", "letterbox"], default="stretch", help="see m2f-edge segment")
    return parser


def run(args) -> int:
    from ..serving.export import export_triton

    if args.engine and args.python_runtime:
        raise ValueError("--engine and --python-runtime exclude each other")
    network = "python" if args.python_runtime else ("tensorrt" if args.engine else "onnxruntime")
    options = dict(max_instances=args.max_instances, resize=args.resize)
    if args.threshold is not None:
        options["score_threshold"] = args.threshold
    if args.spec:
        options["spec"] = args.spec
    written = export_triton(args.model, args.out, name=args.name, network=network, engine=args.engine,
                            max_batch=args.max_batch, max_queue_delay_us=args.max_queue_delay_us,
                            instances=args.instances, kind="KIND_GPU" if args.kind == "gpu" else "KIND_CPU",
                            options=options, python_env=args.python_env)
    for folder in written:
        print(folder)
    return 0
