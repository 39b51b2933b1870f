"""A Segmenter whose model runs on a Triton server: Segmenter("grpc://host:8001/mask2former").

Each frame is one inference request; up to `in_flight` requests are on the wire at once (a worker thread
each, with its own connection), so that run_batch and stream() give the server's dynamic batcher several
frames to batch. On the same host (a loopback address) each worker writes its frames into its own system
shared-memory region registered with the server, instead of sending the pixels over the socket.

URL: grpc://HOST:PORT/MODEL or http://HOST:PORT/MODEL, with optional query settings:
    shm=auto|0|1      system shared memory for the frames (auto: on a loopback host)
    timeout=SECONDS   per request (30)
    in_flight=N       requests on the wire at once (8)
    masks=rle|bits    how masks travel (rle: COCO RLE, compact; bits: bit-packed, faster to decode)
    token=T           the server's access token (also from $M2F_TRITON_TOKEN), for the shared-memory API
                      (without it: frames over the socket; PermissionError where shm=1 asks for shared memory)
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import List, Optional
from urllib.parse import parse_qs, urlsplit

import numpy as np

from .._checks import Prepared, _as_frame_list, _check_frame, _positive_int_arg, _unit_arg
from ..instances import Instances
from ..runners import Job, Runner, Step
from .protocol import INFO_PARAMETER, INPUT_NAME, OUTPUT_NAMES, decode_results

logger = logging.getLogger(__name__)
SCHEMES = ("grpc", "http")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_region_ids = itertools.count()


class FrameBatch:
    """What a remote Segmenter's preprocess gives its infer: the frames, checked, in sending order."""

    __slots__ = ("frames", "colors")

    def __init__(self, frames: List[np.ndarray], colors: List[str]):
        self.frames = frames
        self.colors = colors

    def __len__(self) -> int:
        return len(self.frames)


class RemoteRunner:
    """The client side of m2f-edge serve. Also the `backend` of a remote Segmenter (name, close)."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.protocol = parts.scheme.lower()
        if self.protocol not in SCHEMES or not parts.hostname or not parts.port:
            raise ValueError("model: expected a server URL grpc://HOST:PORT/MODEL or http://HOST:PORT/MODEL, got "
                             "{!r}".format(url))
        self.model_name = parts.path.strip("/")
        if not self.model_name or "/" in self.model_name:
            raise ValueError("model: the URL {!r} names no model (grpc://HOST:PORT/MODEL)".format(url))
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = sorted(set(query) - {"shm", "timeout", "in_flight", "masks", "token"})
        if unknown:
            raise ValueError("model: unknown URL setting(s) {} (known: shm, timeout, in_flight, masks, token)".format(
                unknown))
        self.url = "{}://{}:{}/{}".format(self.protocol, parts.hostname, parts.port, self.model_name)
        self.address = "{}:{}".format(parts.hostname if ":" not in parts.hostname else "[" + parts.hostname + "]",
                                      parts.port)
        self.name = "triton-" + self.protocol
        self.timeout_s = _positive_float(query.get("timeout", "30"), "timeout")
        self.in_flight = int(_positive_float(query.get("in_flight", "8"), "in_flight"))
        self.mask_format = query.get("masks", "rle")
        if self.mask_format not in ("rle", "bits"):
            raise ValueError("model: URL setting masks: expected rle or bits, got {!r}".format(self.mask_format))
        shm = query.get("shm", "auto")
        if shm not in ("auto", "0", "1"):
            raise ValueError("model: URL setting shm: expected auto, 0 or 1, got {!r}".format(shm))
        self.use_shm = parts.hostname in LOOPBACK_HOSTS if shm == "auto" else shm == "1"
        self._shm_asked = shm == "1"
        token = query.get("token") or os.environ.get("M2F_TRITON_TOKEN")
        # Triton expects gRPC's restricted-protocol header with a prefix, HTTP's as configured
        header = ("triton-grpc-protocol-" if self.protocol == "grpc" else "") + "triton-access-token"
        self._headers = {header: token} if token else None
        self._local = threading.local()
        self._generation = 0  # bumped when the server goes away: every worker then opens a new connection
        self._lock = threading.Lock()
        self._regions = []  # type: List[_Region]
        self._clients = []  # every connection opened, closed by close() (an open one delays a server's shutdown)
        self._pool = None  # type: Optional[ThreadPoolExecutor]
        self._closed = False
        self.info = self._fetch_info()

    # --- connection ---------------------------------------------------------------------------------------------

    def _client(self):
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            if getattr(local, "region", None) is not None:
                local.region.registered = False
            if getattr(local, "client", None) is not None:
                _close_client(local.client)
                with self._lock:
                    if local.client in self._clients:
                        self._clients.remove(local.client)
            local.client = self._new_client()
            local.generation = self._generation
            with self._lock:
                self._clients.append(local.client)
        return local.client

    def _new_client(self):
        if self.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            # a channel of its own subchannels: a new connection after the server came back must not inherit the
            # reconnect back-off of the old one (gRPC shares subchannels between channels by default)
            return grpcclient.InferenceServerClient(self.address, channel_args=[
                ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
                ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
                ("grpc.use_local_subchannel_pool", 1)])
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(self.address, connection_timeout=self.timeout_s,
                                                network_timeout=self.timeout_s)

    def _call(self, what: str, function, *args, **kwargs):
        """Run a client call; turn an unreachable server into ConnectionError and a deadline into TimeoutError."""
        from tritonclient.utils import InferenceServerException

        try:
            return function(*args, **kwargs)
        except InferenceServerException as exc:
            status = str(exc.status() or "")
            text = exc.message() or str(exc)
            if "restricted" in text:
                raise PermissionError("{}: {} needs the server's access token (token=... in the URL or "
                                      "$M2F_TRITON_TOKEN): {}".format(self.url, what, text)) from None
            if "UNAVAILABLE" in status or "Failed to connect" in text or "Connection refused" in text \
                    or "Socket closed" in text or "connection" in text.lower() and "reset" in text.lower():
                self._lost()
                raise ConnectionError("{}: the server is unreachable ({}: {})".format(self.url, what, text)) from None
            if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in text:
                self._lost()
                raise TimeoutError("{}: no answer within {} s ({})".format(self.url, self.timeout_s, what)) from None
            raise _server_error(self.url, text) from None
        except (OSError, EOFError) as exc:  # the HTTP client's socket errors (ConnectionRefusedError, timeouts)
            self._lost()
            if isinstance(exc, TimeoutError) or "timed out" in str(exc):
                raise TimeoutError("{}: no answer within {} s ({})".format(self.url, self.timeout_s, what)) from None
            raise ConnectionError("{}: the server is unreachable ({}: {})".format(self.url, what, exc)) from None

    def _lost(self) -> None:
        with self._lock:
            self._generation += 1

    def _fetch_info(self) -> dict:
        client = self._client()
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        ready = self._call("model readiness", client.is_model_ready, self.model_name, **kwargs)
        if not ready:
            raise ConnectionError("{}: the server does not serve a ready model '{}'".format(self.url, self.model_name))
        if self.protocol == "grpc":
            config = self._call("model config", client.get_model_config, self.model_name, as_json=True,
                                client_timeout=self.timeout_s)["config"]
        else:
            config = self._call("model config", client.get_model_config, self.model_name)
        parameters = config.get("parameters", {})
        if INFO_PARAMETER not in parameters:
            raise ValueError("{}: '{}' is not a model served by m2f-edge serve (its config has no {} parameter)".format(
                self.url, self.model_name, INFO_PARAMETER))
        return json.loads(parameters[INFO_PARAMETER]["string_value"])

    # --- requests -----------------------------------------------------------------------------------------------

    def submit(self, frame: np.ndarray, color: str, score_threshold: float, max_instances: int,
               make_instances) -> Future:
        """Send one checked (H,W,3) uint8 frame; the Future gives its Instances."""
        if self._closed:
            raise RuntimeError("{}: the remote Segmenter is closed".format(self.url))
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="m2f-remote")
        parameters = {"color": color, "score_threshold": float(score_threshold),
                      "max_instances": int(max_instances), "masks": self.mask_format}
        return self._pool.submit(self._infer, frame, parameters, make_instances)

    def _infer(self, frame: np.ndarray, parameters: dict, make_instances) -> Instances:
        client = self._client()
        batch = frame[None]
        if self.protocol == "grpc":
            from tritonclient.grpc import InferInput, InferRequestedOutput
        else:
            from tritonclient.http import InferInput, InferRequestedOutput
        request_input = InferInput(INPUT_NAME, list(batch.shape), "UINT8")
        region = None
        if self.use_shm:
            try:
                region = self._region(client, batch.nbytes)
            except PermissionError:
                if self._shm_asked:
                    raise
                logger.warning("%s: the server wants its access token for shared memory (token=... in the URL or "
                               "$M2F_TRITON_TOKEN); sending frames over the socket", self.url)
                self.use_shm = False
        if region is not None:
            np.ndarray(batch.shape, np.uint8, buffer=region.memory.buf)[...] = batch
            request_input.set_shared_memory(region.name, batch.nbytes)
        else:
            request_input.set_data_from_numpy(np.ascontiguousarray(batch))
        wanted = [n for n in OUTPUT_NAMES if n != ("masks_bits" if self.mask_format == "rle" else "masks_rle")]
        outputs = [InferRequestedOutput(n) for n in wanted]
        extra = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        result = self._call("infer", client.infer, self.model_name, [request_input], outputs=outputs,
                            parameters=parameters, headers=self._headers, **extra)
        arrays = {n: result.as_numpy(n) for n in wanted}
        return decode_results(arrays, self.mask_format, make_instances)[0]

    def _region(self, client, size: int) -> "_Region":
        local = self._local
        region = getattr(local, "region", None)
        if region is not None and region.size < size:
            self._drop_region(client, region)
            region = None
        if region is None:
            region = _Region(max(size, 1 << 20))
            with self._lock:
                self._regions.append(region)
            local.region = region
        if not region.registered:
            try:
                self._call("register shared memory", client.register_system_shared_memory, region.name, region.key,
                           region.size, headers=self._headers)
            except RuntimeError as exc:  # after a timeout the server may well still hold the registration
                if "already in manager" not in str(exc):
                    raise
            region.registered = True
        return region

    def _drop_region(self, client, region: "_Region") -> None:
        try:
            if region.registered:
                client.unregister_system_shared_memory(region.name, headers=self._headers)
        except Exception:  # the server may be gone; the region is ours to remove either way
            pass
        region.destroy()
        with self._lock:
            if region in self._regions:
                self._regions.remove(region)
        self._local.region = None

    def close(self) -> None:
        """Finish in-flight requests, unregister and remove the shared-memory regions."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        with self._lock:
            regions, self._regions = list(self._regions), []
        if regions:
            client = None
            try:
                client = self._new_client()
                for region in regions:
                    if region.registered:
                        client.unregister_system_shared_memory(region.name, headers=self._headers)
            except Exception:  # the server may be gone: the regions are removed below regardless
                pass
            if client is not None:
                _close_client(client)
        for region in regions:
            region.destroy()
        with self._lock:
            clients, self._clients = list(self._clients), []
        for client in clients:
            _close_client(client)

    def describe(self) -> str:
        return "{} (shared memory: {}, {} in flight)".format(self.url, "yes" if self.use_shm else "no",
                                                           self.in_flight)


class _Region:
    """A system shared-memory region this client owns (created here, removed by destroy)."""

    def __init__(self, size: int):
        from multiprocessing import shared_memory

        self.name = "m2f_edge_{}_{}".format(os.getpid(), next(_region_ids))
        self.memory = shared_memory.SharedMemory(name=self.name, create=True, size=size)
        self.key = "/" + self.memory.name.lstrip("/")
        self.size = size
        self.registered = False

    def destroy(self) -> None:
        try:
            self.memory.close()
            self.memory.unlink()
        except (FileNotFoundError, BufferError):
            pass


def _close_client(client) -> None:
    try:
        client.close()
    except Exception:  # closing a connection to a server that is gone
        pass


def _server_error(url: str, text: str) -> Exception:
    """A server-side failure as the exception a local Segmenter would raise (ValueError, TypeError)."""
    for kind in (ValueError, TypeError):
        prefix = kind.__name__ + ": "
        if prefix in text:
            return kind("{} (from {})".format(text.split(prefix, 1)[1], url))
    if "unexpected shape" in text or "data-type" in text:
        return ValueError("{} (from {})".format(text, url))
    return RuntimeError("{}: {}".format(url, text))


def _positive_float(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError("model: URL setting {}: expected a positive number, got {!r}".format(name, text))
    return value


# --- the remote Segmenter: what Segmenter does with a URL model ----------------------------------------------------

def attach(seg, url: str, *, color: str, score_threshold, max_instances: int, server_side: dict) -> RemoteRunner:
    """Make `seg` a client of the server at `url`: its attributes come from the served model.

    server_side: the Segmenter arguments that belong to the server; any given (not None, not the default)
    raises ValueError, rather than being silently ignored.
    """
    from ..spec import Spec

    for name, value in server_side.items():
        if value is not None and not (name == "backend" and value == "auto") and \
                not (name == "resize" and value == "stretch"):
            raise ValueError("{}: a Segmenter on a server URL takes this setting from the server (give it to m2f-edge "
                             "serve), got {!r}".format(name, value))
    runner = RemoteRunner(url)
    info = runner.info
    seg.backend = runner
    seg.model_path = runner.url
    seg.contract = info.get("contract", "deployable")
    seg.input_size = tuple(info.get("input_size", (0, 0)))
    seg.input_dtype = np.dtype(np.uint8)  # what travels: the frames
    seg.batch_range = (1, None)
    seg.num_classes = len(info.get("class_names") or []) or None
    seg.class_names = list(info.get("class_names") or ["object"])
    seg.category_ids = info.get("category_ids")
    seg.score_threshold = (_unit_arg("score_threshold", score_threshold) if score_threshold is not None
                           else float(info.get("score_threshold", 0.5)))
    seg.max_instances = _positive_int_arg("max_instances", max_instances)
    seg.color = color
    seg.resize = info.get("resize", "stretch")
    seg.mean = tuple(info.get("mean") or (0.485, 0.456, 0.406))
    seg.std = tuple(info.get("std") or (0.229, 0.224, 0.225))
    seg.no_object_index = int(info.get("no_object_index") or 0)
    seg.topk = int(info.get("topk") or 100)
    seg.settings = Spec(class_names=seg.class_names, category_ids=seg.category_ids, sources=["server " + runner.url])
    seg.threads = 0
    return runner


def _wire_frame(seg, frame, name: str):
    """(H,W,3) uint8 view or copy, and the colour order to tell the server."""
    _check_frame(frame, name)
    color = seg._frame_color(frame.shape[2] if frame.ndim == 3 else 1, name)
    if color == "gray":
        plane = frame if frame.ndim == 2 else frame[:, :, 0]
        return np.repeat(plane[:, :, None], 3, axis=2), "bgr"
    return frame[:, :, :3], color[:3]


def _instances_maker(seg):
    def make(masks, scores, labels, boxes, areas, query_indices, image_size):
        return Instances(masks, scores, labels, boxes, areas, image_size=image_size, class_table=seg.class_names,
                         category_ids=seg.category_ids, query_indices=query_indices)
    return make


def remote_preprocess(seg, frames):
    batch = _as_frame_list(frames)
    batch = list(batch) if isinstance(batch, np.ndarray) else batch
    if not batch:
        raise ValueError("frames: expected at least one frame, got none")
    wire = [_wire_frame(seg, frame, "frames[{}]".format(i)) for i, frame in enumerate(batch)]
    return Prepared(FrameBatch([w[0] for w in wire], [w[1] for w in wire]),
                    [tuple(w[0].shape[:2]) for w in wire])


def remote_infer(seg, tensor):
    """Send the frames of a FrameBatch; returns at once with {"pending": [Future]} (postprocess waits)."""
    if not isinstance(tensor, FrameBatch):
        raise TypeError("tensor: a remote Segmenter's infer takes what its preprocess gives (frames), got {}".format(
            type(tensor).__name__))
    runner, make = seg.backend, _instances_maker(seg)
    return {"pending": [runner.submit(frame, color, seg.score_threshold, seg.max_instances, make)
                        for frame, color in zip(tensor.frames, tensor.colors)]}


def remote_postprocess(seg, outputs, transforms) -> List[Instances]:
    pending = outputs["pending"][:len(transforms)]
    results = []
    failure = None
    for future in pending:  # wait for every request, so that none is still running when this returns
        try:
            results.append(future.result())
        except Exception as exc:  # noqa: BLE001 (re-raised below: the first failure)
            failure = failure or exc
    if failure is not None:
        raise failure
    return results


class RemoteSegmenterRunner(Runner):
    """The runner of a Segmenter on a server URL: ``send`` checks the frames and submits one request per
    frame without waiting (several in flight), ``receive`` waits for their Instances. In the stream the two
    run in their own threads, so the next frames are on their way while earlier ones are answered."""

    name = "remote"

    def steps(self) -> List[Step]:
        return [Step("send", "sent", self._send), Step("receive", "received", self._receive)]

    def _send(self, job: Job) -> None:
        job.prepared = remote_preprocess(self.segmenter, job.frames)
        job.outputs = remote_infer(self.segmenter, job.prepared.tensor)

    def _receive(self, job: Job) -> None:
        job.results = remote_postprocess(self.segmenter, job.outputs, job.prepared.transforms)
        job.outputs = None
        self._last_timings = {"runner": self.name}
