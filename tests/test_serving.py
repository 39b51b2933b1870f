"""m2f-edge serve and the remote Segmenter, against the real Triton server bundled in nvidia-pytriton.

The servers run on free loopback ports; every test bounds its requests in count and time. References are
the local Segmenter on the same model (an in-process ONNX Runtime run) and pycocotools."""

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="serving tests need nvidia-pytriton (pip install 'm2f-edge[serve]'; it pins "
                                       "numpy<2, so CI runs them in their own virtual environment)")
pytest.importorskip("tritonclient.grpc", reason="serving tests need tritonclient[grpc,http] (m2f-edge[serve])")

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from pycocotools import mask as coco_mask  # noqa: E402

import m2f_edge  # noqa: E402
from m2f_edge.segmenter import IMAGENET_MEAN  # noqa: E402
from m2f_edge.serving import prepare_server, segmenter_options  # noqa: E402
from subprocess_env import SUBPROCESS_CWD, subprocess_env  # noqa: E402
from tiny_models import make_test_frame  # noqa: E402

TOKEN = "test-token-13"
MODEL = "mask2former"
HEADERS = {"triton-grpc-protocol-triton-access-token": TOKEN}  # gRPC's restricted-protocol header
pytestmark = pytest.mark.slow


def _shm_names():
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


CLIENT_REGIONS = "m2f_edge_{}_".format(os.getpid())  # the remote Segmenters' regions in this process


def _start(model_path, log, **kwargs):
    options = dict(max_batch=8, max_queue_delay_us=20000, instances=1, http_port=0, grpc_port=0, metrics_port=0,
                   token=TOKEN, log=str(log))
    options.update(kwargs)
    server = prepare_server(model_path, options=segmenter_options(threads=1), **options)
    server.start()
    try:
        server.wait_ready(models=[MODEL], timeout_s=120)
    except BaseException:
        server.stop()
        raise
    return server


def _assert_no_leftovers(server, pid, shm_before, clients_closed=True):
    assert not os.path.exists(server.workspace), "the server's workspace is left behind"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    prefixes = (server.shm_prefix, CLIENT_REGIONS) if clients_closed else (server.shm_prefix,)
    left = {n for n in _shm_names() - shm_before if n.startswith(prefixes)}
    assert not left, "shared-memory regions left behind: {}".format(sorted(left))


@pytest.fixture(scope="module")
def served(deployable_model_3, tmp_path_factory):
    shm_before = _shm_names()
    log = tmp_path_factory.mktemp("triton") / "server.log"
    server = _start(deployable_model_3, log)
    pid = server.pid
    yield server
    assert server.stop() == 0, "tritonserver did not exit cleanly on SIGTERM"
    _assert_no_leftovers(server, pid, shm_before)


@pytest.fixture(scope="module")
def local(deployable_model_3):
    with m2f_edge.Segmenter(deployable_model_3, threads=1) as seg:
        yield seg


def _frames():
    base, _ = make_test_frame()
    small, _ = make_test_frame(120, 200)
    return [base, small, np.ascontiguousarray(base[::-1]), base[10:200, 30:300]]


def _assert_same(remote, expected):
    assert len(remote) == len(expected)
    for got, want in zip(remote, expected):
        assert got.image_size == want.image_size
        assert len(got) == len(want) and len(want) > 0
        np.testing.assert_array_equal(got.masks, want.masks)
        np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.areas, want.areas)
        np.testing.assert_array_equal(got.query_indices, want.query_indices)
        assert got.class_names == want.class_names


@pytest.mark.parametrize("protocol,query", [("grpc", ""), ("http", ""), ("grpc", "?shm=0&masks=bits"),
                                            ("http", "?shm=1&masks=bits")])
def test_remote_segmenter_equals_local(served, local, protocol, query):
    url = served.url(protocol, MODEL) + query + ("&" if query else "?") + "token=" + TOKEN
    with m2f_edge.Segmenter(url) as remote:
        assert remote.input_size == local.input_size and remote.class_names == local.class_names
        frames = _frames()
        _assert_same(remote.run_batch(frames), local.run_batch(frames))
        _assert_same([remote.run(frames[0])], [local.run(frames[0])])
        rgb = np.ascontiguousarray(frames[0][:, :, ::-1])
        remote.color = "rgb"
        _assert_same([remote.run(rgb)], [local.run(frames[0])])


def test_remote_segmenter_arguments(served):
    url = served.url("grpc", MODEL)
    with pytest.raises(ValueError, match="class_names: a Segmenter on a server URL"):
        m2f_edge.Segmenter(url, class_names=["a"])
    with pytest.raises(ValueError, match="names no model"):
        m2f_edge.Segmenter(served.url("grpc"))
    with pytest.raises(ValueError, match="unknown URL setting"):
        m2f_edge.Segmenter(url + "?shared=1")
    with pytest.raises(ConnectionError, match="does not serve a ready model 'no_such_model'"):
        m2f_edge.Segmenter(served.url("grpc", "no_such_model"))
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    for protocol in ("grpc", "http"):
        dead = "{}://127.0.0.1:{}/{}".format(protocol, port, MODEL)
        with pytest.raises(ConnectionError, match=dead):
            m2f_edge.Segmenter(dead + "?timeout=5")
    frame, _ = make_test_frame()
    with m2f_edge.Segmenter(url + "?shm=1") as remote:  # shared memory asked for, without the server's token
        with pytest.raises(PermissionError, match="access token"):
            remote.run(frame)
    with m2f_edge.Segmenter(url) as remote:  # shared memory where it can: over the socket without the token
        assert len(remote.run(frame)) == 3 and not remote.backend.use_shm
    with m2f_edge.Segmenter(url + "?token=" + TOKEN) as remote:
        assert remote.backend.name == "triton-grpc" and "backend=triton-grpc" in repr(remote)
        assert remote.model_path == url
        assert remote.mean == IMAGENET_MEAN and remote.batch_range == (1, None)


def test_request_parameters_and_compact_outputs_match_pycocotools(served, deployable_model_3):
    frame, _ = make_test_frame()
    client = grpcclient.InferenceServerClient(served.url("grpc").split("://")[1].rstrip("/"))
    request = grpcclient.InferInput("frames", [1] + list(frame.shape), "UINT8")
    request.set_data_from_numpy(frame[None])
    with m2f_edge.Segmenter(deployable_model_3, threads=1, score_threshold=0.75, max_instances=1) as strict:
        want = strict.run(frame)
    for masks in ("rle", "bits"):
        result = client.infer(MODEL, [request], parameters={"score_threshold": 0.75, "max_instances": 1,
                                                            "masks": masks}, client_timeout=60)
        assert result.as_numpy("num_instances")[0, 0] == len(want) == 1
        np.testing.assert_allclose(result.as_numpy("scores")[0], want.scores, atol=1e-6)
        if masks == "rle":
            reference = coco_mask.encode(np.asfortranarray(want.masks.astype(np.uint8).transpose(1, 2, 0)))
            assert [r["counts"] for r in reference] == list(result.as_numpy("masks_rle")[0])
            assert result.as_numpy("masks_bits").size == 0
        else:
            bits = result.as_numpy("masks_bits")[0]
            unpacked = np.unpackbits(bits, axis=1, count=frame.shape[0] * frame.shape[1])
            np.testing.assert_array_equal(unpacked.reshape(want.masks.shape), want.masks)
            assert bits.nbytes == (frame.shape[0] * frame.shape[1] + 7) // 8
    with pytest.raises(Exception, match="score_threshold"):
        client.infer(MODEL, [request], parameters={"score_threshold": 2.0}, client_timeout=60)


def test_concurrent_clients_are_batched(served, local):
    client = grpcclient.InferenceServerClient(served.url("grpc").split("://")[1].rstrip("/"))

    def executions():
        stats = client.get_inference_statistics(MODEL, headers=HEADERS, as_json=True)["model_stats"][0]
        return int(stats.get("execution_count", 0)), int(stats["inference_stats"]["success"].get("count", 0))

    executions_before, requests_before = executions()
    frame, _ = make_test_frame()
    expected = local.run(frame)
    start = threading.Barrier(8, timeout=60)

    def one_client(_):
        with m2f_edge.Segmenter(served.url("grpc", MODEL) + "?token=" + TOKEN) as remote:
            start.wait()
            return [remote.run(frame) for _ in range(3)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one_client, range(8), timeout=180))
    for per_client in results:
        _assert_same(per_client, [expected] * 3)
    executions_after, requests_after = executions()
    assert requests_after - requests_before == 24
    assert executions_after - executions_before < 24, "the dynamic batcher formed no batch"
    with pytest.raises(Exception, match="(?i)unauthorized|permission|token|restricted"):
        client.get_inference_statistics(MODEL)  # the statistics API wants the token


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bad_frames_get_clear_errors_and_the_server_keeps_serving(served, local, protocol):
    frame, _ = make_test_frame()
    with m2f_edge.Segmenter(served.url(protocol, MODEL) + "?token=" + TOKEN) as remote:
        with pytest.raises(TypeError, match="dtype uint8"):
            remote.run(frame.astype(np.float32))
        with pytest.raises(ValueError, match="at least 32x32"):
            remote.run(np.zeros((1, 1, 3), np.uint8))
        with pytest.raises(ValueError, match="channels"):
            remote.run(np.zeros((64, 64, 5), np.uint8))
        _assert_same([remote.run(frame)], [local.run(frame)])
    # the same frames sent by a plain Triton client: refused by the server itself, which keeps serving
    module = grpcclient if protocol == "grpc" else httpclient
    address = served.url(protocol).split("://")[1].rstrip("/")
    client = module.InferenceServerClient(address)
    for bad, dtype in ((np.zeros((1, 8, 8, 3), np.float32), "FP32"), (np.zeros((1, 1, 1, 3), np.uint8), "UINT8"),
                       (np.zeros((1, 64, 64, 5), np.uint8), "UINT8")):
        request = module.InferInput("frames", list(bad.shape), dtype)
        request.set_data_from_numpy(bad)
        with pytest.raises(Exception, match="(?i)data-type|at least 32x32|unexpected shape"):
            client.infer(MODEL, [request])
    good = module.InferInput("frames", [1] + list(frame.shape), "UINT8")
    good.set_data_from_numpy(frame[None])
    assert client.infer(MODEL, [good]).as_numpy("num_instances")[0, 0] == len(local.run(frame))


def test_stream_over_a_remote_segmenter(served, local, tmp_path):
    cv2 = pytest.importorskip("cv2")
    frames = _frames()[:2] * 3
    for i, frame in enumerate(frames):
        assert cv2.imwrite(str(tmp_path / "{:03d}.png".format(i)), frame)
    with m2f_edge.Segmenter(served.url("grpc", MODEL) + "?token=" + TOKEN) as remote:
        results = [r.instances for r in remote.stream(str(tmp_path), batch=2, max_frames=len(frames))]
    _assert_same(results, local.run_batch(frames))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_stalled_server_times_out_then_serves_again(served, local, protocol):
    frame, _ = make_test_frame()
    with m2f_edge.Segmenter(served.url(protocol, MODEL) + "?timeout=2&token=" + TOKEN) as remote:
        _assert_same([remote.run(frame)], [local.run(frame)])
        os.killpg(served.pid, signal.SIGSTOP)  # the server and its stubs stop answering
        try:
            with pytest.raises(TimeoutError, match=served.url(protocol, MODEL)):
                remote.run(frame)
        finally:
            os.killpg(served.pid, signal.SIGCONT)
        _assert_same([remote.run(frame)], [local.run(frame)])


def test_metrics_and_health(served):
    import urllib.request

    with urllib.request.urlopen("http://127.0.0.1:{}/metrics".format(served.metrics_port), timeout=10) as reply:
        text = reply.read().decode()
    assert 'nv_inference_request_success{model="mask2former"' in text
    with urllib.request.urlopen(served.url("http").rstrip("/") + "/v2/health/live", timeout=10) as reply:
        assert reply.status == 200


def test_server_killed_mid_stream_then_back(deployable_model_3, local, tmp_path):
    shm_before = _shm_names()
    server = _start(deployable_model_3, tmp_path / "first.log", token=None)
    ports = dict(http_port=server.http_port, grpc_port=server.grpc_port, metrics_port=server.metrics_port)
    frame, _ = make_test_frame()
    expected = local.run(frame)
    url = server.url("grpc", MODEL) + "?timeout=20"
    first_pid = server.pid
    with m2f_edge.Segmenter(url) as remote:
        _assert_same(remote.run_batch([frame] * 4), [expected] * 4)
        server.kill()  # a crash: SIGKILL to the server and its stubs
        with pytest.raises(ConnectionError, match=server.url("grpc", MODEL)):
            remote.run_batch([frame] * 4)
        assert server.stop() is not None
        _assert_no_leftovers(server, first_pid, shm_before, clients_closed=False)  # the client is still open
        again = _start(deployable_model_3, tmp_path / "second.log", token=None, **ports)
        try:
            _assert_same(remote.run_batch([frame] * 4), [expected] * 4)
        finally:
            again_pid = again.pid
            assert again.stop() == 0
    _assert_no_leftovers(again, again_pid, shm_before)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serve_stops_cleanly_on_a_signal(deployable_model_3, tmp_path, stop_signal):
    workspace = tmp_path / "tmp"
    workspace.mkdir()
    shm_before = _shm_names()
    command = [sys.executable, "-m", "m2f_edge", "serve", "-m", deployable_model_3, "--http-port", "0",
               "--grpc-port", "0", "--metrics-port", "0", "--threads", "1", "--log", str(tmp_path / "log.txt")]
    process = subprocess.Popen(command, cwd=SUBPROCESS_CWD, env=subprocess_env(TMPDIR=str(workspace)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # "serving mask2former (...): grpc://... http://..."
        assert line.startswith("serving mask2former"), line + process.stderr.read()
        url = line.split()[3]
        with m2f_edge.Segmenter(url) as remote:
            assert len(remote.run(make_test_frame()[0])) == 3
        process.send_signal(stop_signal)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    left_dirs = [n for n in os.listdir(str(workspace)) if n.startswith("m2f-edge-")]
    assert not left_dirs, "the server's workspace is left behind"
    left = {n for n in _shm_names() - shm_before if n.startswith(("triton_m2f_edge_{}_".format(process.pid),
                                                                   CLIENT_REGIONS))}
    assert not left, "shared-memory regions left behind: {}".format(sorted(left))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and subprocess.run(["pgrep", "-f", str(workspace)],
                                                         stdout=subprocess.DEVNULL).returncode == 0:
        time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", str(workspace)], stdout=subprocess.DEVNULL).returncode != 0, \
        "a tritonserver of this test is still running"


# --- m2f-edge export-triton ---------------------------------------------------------------------------------------

def _repository_index(server, timeout_s=120):
    """The server's model states once none is loading (POST /v2/repository/index)."""
    import json
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        request = urllib.request.Request(server.url("http").rstrip("/") + "/v2/repository/index", data=b"{}",
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                index = json.loads(reply.read())
            stages = [m for m in index if m["name"] != MODEL]  # the ensemble has no state until its models load
            if len(stages) == 3 and all(m.get("state") not in (None, "LOADING") for m in stages):
                return {m["name"]: m for m in index}
        except (urllib.error.URLError, OSError):
            pass
        assert server.running(), "tritonserver exited"
        time.sleep(0.3)
    raise AssertionError("the models did not finish loading")


@pytest.mark.parametrize("contract", ["deployable", "raw"])
def test_export_triton_python_runtime_serves_end_to_end(tiny_model, tmp_path, contract):
    from m2f_edge.cli import main
    from m2f_edge.serving.server import TritonServer

    model_path = tiny_model(contract, num_classes=3)
    local = m2f_edge.Segmenter(model_path, threads=1)
    repo = tmp_path / "repo"
    assert main(["export-triton", model_path, "-o", str(repo), "--python-runtime", "--kind", "cpu",
                 "--python-env", sys.prefix, "--max-queue-delay-us", "20000"]) == 0
    assert sorted(os.listdir(str(repo))) == [MODEL, MODEL + "_network", MODEL + "_postprocess", MODEL + "_preprocess"]
    shm_before = _shm_names()
    server = TritonServer(str(repo), http_port=0, grpc_port=0, metrics_port=0, log=str(tmp_path / "log.txt"))
    server.start()
    pid = server.pid
    try:
        server.wait_ready(models=[MODEL], timeout_s=120)
        frames = _frames()
        for protocol in ("grpc", "http"):
            with m2f_edge.Segmenter(server.url(protocol, MODEL)) as remote:
                _assert_same(remote.run_batch(frames), local.run_batch(frames))
                remote.score_threshold = local.score_threshold = 0.75  # a request parameter, for the post-processing
                _assert_same([remote.run(frames[0])], [local.run(frames[0])])
                assert len(local.run(frames[0])) == 2
                with pytest.raises(ValueError, match="at least 32x32"):
                    remote.run(np.zeros((8, 8, 3), np.uint8))
                remote.score_threshold = local.score_threshold = 0.5
                _assert_same([remote.run(frames[1])], [local.run(frames[1])])
    finally:
        local.close()
        assert server.stop() == 0
    _assert_no_leftovers(server, pid, shm_before)


@pytest.mark.parametrize("network", ["onnxruntime", "tensorrt"])
def test_export_triton_native_configs(deployable_model_3, tmp_path, network):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from m2f_edge.serving.export import export_triton
    from m2f_edge.serving.server import TritonServer

    repo = tmp_path / "repo"
    engine = None
    if network == "tensorrt":
        engine = str(tmp_path / "model.engine")
        with open(engine, "wb") as handle:
            handle.write(b"not a real engine: the bundled server has no tensorrt backend to read it")
    export_triton(deployable_model_3, str(repo), network=network, engine=engine, max_batch=4, instances=2,
                  python_env=sys.prefix)
    configs = {}
    for name in os.listdir(str(repo)):
        with open(str(repo / name / "config.pbtxt"), encoding="utf-8") as handle:
            configs[name] = text_format.Parse(handle.read(), model_config_pb2.ModelConfig())  # Triton's schema
    net = configs[MODEL + "_network"]
    assert net.platform == {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}[network]
    assert net.max_batch_size == 4 and net.dynamic_batching.max_queue_delay_microseconds == 2000
    assert net.instance_group[0].count == 2 and net.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert os.path.isfile(str(repo / (MODEL + "_network") / "1" / ("model.plan" if engine else "model.onnx")))
    ensemble = configs[MODEL]
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 4
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [MODEL + "_preprocess", MODEL + "_network",
                                                                        MODEL + "_postprocess"]
    assert [o.name for o in ensemble.output] == [o.name for o in configs[MODEL + "_postprocess"].output]

    server = TritonServer(str(repo), http_port=0, grpc_port=0, metrics_port=0, log=str(tmp_path / "log.txt"),
                          extra_args=["--exit-on-error=false"])
    server.start()
    try:
        index = _repository_index(server)
    finally:
        server.stop()
    assert index[MODEL + "_network"]["state"] == "UNAVAILABLE"
    assert index[MODEL + "_network"]["reason"] == (
        "Invalid argument: unable to find backend library for backend '{}', try specifying runtime on the model "
        "configuration.".format(network))
    assert index[MODEL + "_preprocess"]["state"] == "READY" and index[MODEL + "_postprocess"]["state"] == "READY"
    assert index[MODEL].get("state") != "READY"
