"""Serving m2f_edge through NVIDIA Triton Inference Server, and a client that makes a served model a Segmenter.

    m2f-edge serve --model mask2former.onnx              # Triton on :8000 (HTTP), :8001 (gRPC), :8002 (metrics)
    seg = m2f_edge.Segmenter("grpc://server:8001/mask2former")   # the same Instances as a local Segmenter

The server is the tritonserver bundled in nvidia-pytriton (`pip install 'm2f-edge[serve]'`); the model is a
Python-backend model whose instances each run a Segmenter (see triton_model); the wire format is in protocol.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional

DEFAULT_MODEL_NAME = "mask2former"
DEFAULT_MAX_BATCH = 8


def segmenter_options(backend: str = "auto", score_threshold: Optional[float] = None, max_instances: int = 100,
                      resize: str = "stretch", spec: Optional[str] = None, threads: int = 0) -> dict:
    """The Segmenter keyword arguments each server instance is built with (JSON-able)."""
    options = dict(backend=backend, max_instances=int(max_instances), resize=resize, threads=int(threads))
    if score_threshold is not None:
        options["score_threshold"] = float(score_threshold)
    if spec is not None:
        options["spec"] = os.path.abspath(spec)
    return options


def prepare_server(model_path: str, *, name: str = DEFAULT_MODEL_NAME, options: Optional[dict] = None,
                   max_batch: Optional[int] = None, max_queue_delay_us: int = 2000, instances: int = 1,
                   **server_args):
    """A TritonServer (not started) serving Segmenter(model_path, **options) as `name`.

    The model is opened here once, so that a bad model or option fails before the server starts and the
    client-visible facts (classes, input size, defaults) go into the model's config. server_args go to
    TritonServer (address, ports, token, log).
    """
    from ..segmenter import Segmenter
    from .repository import segmenter_info, write_segmenter_model
    from .server import BundledTriton, TritonServer

    BundledTriton()  # no server to run: say so before loading the model
    options = dict(options or {})
    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 1:
        raise ValueError("instances: expected a positive integer, got {!r}".format(instances))
    if isinstance(max_queue_delay_us, bool) or not isinstance(max_queue_delay_us, int) or max_queue_delay_us < 0:
        raise ValueError("max_queue_delay_us: expected an integer >= 0, got {!r}".format(max_queue_delay_us))
    with Segmenter(model_path, **options) as seg:
        info = segmenter_info(seg)
        high = seg.batch_range[1]
    if max_batch is None:
        max_batch = max(DEFAULT_MAX_BATCH, high or 0)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError("max_batch: expected a positive integer, got {!r}".format(max_batch))
    staging = tempfile.mkdtemp(prefix="m2f-edge-repo-")
    try:
        write_segmenter_model(staging, name, model_path, info, max_batch=max_batch,
                              max_queue_delay_us=max_queue_delay_us, instances=instances, options=options)
        return TritonServer(staging, **server_args)
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)


__all__ = ["DEFAULT_MODEL_NAME", "prepare_server", "segmenter_options"]
