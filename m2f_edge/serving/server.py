"""Run the Triton Inference Server that nvidia-pytriton bundles (tritonserver 2.51, Python backend only) on a
model repository, as a child process with its own workspace.

The bundled binary's Python-backend stub must embed the same Python that runs m2f_edge: the workspace gets
the stub built for this interpreter's version, this interpreter's library folder goes first in
LD_LIBRARY_PATH (else the stub may load another libpython of the same version), and its environment's
bin folder goes first in PATH. Shutdown is SIGTERM (Triton unloads the models and removes its
shared-memory regions), then SIGKILL to the whole process group after a timeout, then the workspace and any
region the server left are removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import uuid
import urllib.request
from typing import Dict, List, Optional, Sequence

logger = logging.getLogger(__name__)

ACCESS_HEADER = "triton-access-token"  # the header PyTriton's clients send the token in
PROTECTED_APIS = ("shared-memory", "model-repository", "statistics", "trace", "logging")
SHM_DIR = "/dev/shm"
PYTHON_BACKEND_SHM_BYTES = 4 << 20
PYTHON_BACKEND_SHM_GROWTH = 16 << 20


class BundledTriton:
    """Where nvidia-pytriton keeps the server: the binary, its libraries, the Python backend and its stubs."""

    def __init__(self):
        try:
            import pytriton
        except ImportError:
            raise ImportError("serving needs the Triton server bundled in nvidia-pytriton: "
                              "pip install 'm2f-edge[serve]' (it pins numpy<2)") from None
        package = os.path.dirname(os.path.abspath(pytriton.__file__))
        root = os.path.join(package, "tritonserver")
        self.binary = os.path.join(root, "bin", "tritonserver")
        self.python_backend = os.path.join(root, "backends", "python")
        version = "{}.{}".format(*sys.version_info[:2])
        self.stub = os.path.join(root, "python_backend_stubs", version, "triton_python_backend_stub")
        candidates = [os.path.join(os.path.dirname(package), "nvidia_pytriton.libs"), os.path.join(root, "external_libs")]
        self.libs = next((c for c in candidates if os.path.isdir(c)), candidates[0])
        for path, what in ((self.binary, "tritonserver"), (self.stub, "the Python-backend stub for Python " + version)):
            if not os.path.isfile(path):
                raise RuntimeError("nvidia-pytriton has no {} ({} is missing)".format(what, path))

    def write_backends(self, folder: str) -> str:
        """A backend directory holding the Python backend with this interpreter's stub; returns it."""
        python = os.path.join(folder, "python")
        os.makedirs(python, exist_ok=True)
        for name in os.listdir(self.python_backend):
            if name.endswith((".so", ".py")):
                os.symlink(os.path.join(self.python_backend, name), os.path.join(python, name))
        shutil.copy(self.stub, os.path.join(python, "triton_python_backend_stub"))
        return folder


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _restricted(token: Optional[str]) -> List[str]:
    if not token:
        return []
    rule = "{}:{}={}".format(",".join(PROTECTED_APIS), ACCESS_HEADER, token)
    return ["--http-restricted-api=" + rule, "--grpc-restricted-protocol=" + rule]


def _die_with_parent() -> None:
    """In the child before exec: its own session (signals reach it only from us), SIGTERM when we die (Linux
    sends it when the thread that started the child ends: start servers from a thread that lives as long)."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class TritonServer:
    """A tritonserver child process serving `repository` (a folder; it is copied into the workspace).

        with TritonServer(repo, http_port=8000, grpc_port=8001, metrics_port=8002) as server:
            server.wait_ready(models=["mask2former"])

    Ports 0 take free ones (see .http_port, .grpc_port, .metrics_port). log: a path for the server's
    output, None to inherit ours.
    """

    def __init__(self, repository: str, *, address: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                 metrics_port: int = 8002, token: Optional[str] = None, log: Optional[str] = None,
                 exit_timeout_s: int = 10, extra_args: Sequence[str] = (), workspace: Optional[str] = None):
        self.bundle = BundledTriton()
        self.address = address
        probe_host = "127.0.0.1" if address in ("0.0.0.0", "") else address
        self.http_port = int(http_port) or free_port(probe_host)
        self.grpc_port = int(grpc_port) or free_port(probe_host)
        self.metrics_port = int(metrics_port) or free_port(probe_host)
        self.token = token
        self.exit_timeout_s = int(exit_timeout_s)
        self.workspace = workspace or tempfile.mkdtemp(prefix="m2f-edge-triton-")
        self.repository = os.path.join(self.workspace, "repository")
        shutil.copytree(repository, self.repository, symlinks=True)
        self.backends = self.bundle.write_backends(os.path.join(self.workspace, "backends"))
        self.log_path = log
        self._log_handle = None
        self._process = None  # type: Optional[subprocess.Popen]
        # the Python backend's regions carry this prefix, so that those a killed server leaves can be found
        self.shm_prefix = "triton_m2f_edge_{}_{}_".format(os.getpid(), uuid.uuid4().hex[:8])
        self._extra_args = list(extra_args)

    # --- life cycle ---------------------------------------------------------------------------------------------

    def command(self) -> List[str]:
        return [self.bundle.binary, "--model-repository=" + self.repository, "--backend-directory=" + self.backends,
                "--http-address=" + self.address, "--grpc-address=" + self.address,
                "--metrics-address=" + self.address, "--http-port={}".format(self.http_port),
                "--grpc-port={}".format(self.grpc_port), "--metrics-port={}".format(self.metrics_port),
                "--allow-metrics=true", "--allow-gpu-metrics=false", "--strict-readiness=true",
                "--exit-timeout-secs={}".format(self.exit_timeout_s),
                "--backend-config=python,shm-region-prefix-name=" + self.shm_prefix,
                # each Python-backend process starts with a small region (containers often have a 64 MB /dev/shm)
                # that grows in steps of a few full-HD frames
                "--backend-config=python,shm-default-byte-size={}".format(PYTHON_BACKEND_SHM_BYTES),
                "--backend-config=python,shm-growth-byte-size={}".format(PYTHON_BACKEND_SHM_GROWTH),
                ] + _restricted(self.token) + self._extra_args

    def environment(self) -> Dict[str, str]:
        env = dict(os.environ)
        own_libs = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (own_libs, self.bundle.libs, env.get("LD_LIBRARY_PATH"))
                                                 if p)
        env["PATH"] = os.pathsep.join((os.path.join(sys.prefix, "bin"), env.get("PATH", "")))
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        return env

    def start(self) -> "TritonServer":
        if self._process is not None:
            raise RuntimeError("the server is already started")
        output = None
        if self.log_path:
            self._log_handle = open(self.log_path, "ab")
            output = self._log_handle
        self._process = subprocess.Popen(self.command(), env=self.environment(), stdout=output,
                                         stderr=subprocess.STDOUT if output else None, preexec_fn=_die_with_parent)
        logger.info("tritonserver (pid %d): HTTP %s:%d, gRPC %s:%d, metrics %s:%d", self._process.pid, self.address,
                    self.http_port, self.address, self.grpc_port, self.address, self.metrics_port)
        return self

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def url(self, protocol: str = "grpc", model: str = "") -> str:
        host = "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address
        port = self.grpc_port if protocol == "grpc" else self.http_port
        return "{}://{}:{}/{}".format(protocol, host, port, model)

    def ready(self, model: Optional[str] = None) -> bool:
        host = "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address
        path = "/v2/models/{}/ready".format(model) if model else "/v2/health/ready"
        try:
            with urllib.request.urlopen("http://{}:{}{}".format(host, self.http_port, path), timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, models: Sequence[str] = (), timeout_s: float = 120.0) -> None:
        """Block until the server and each model are ready; raises RuntimeError (with the log's end) if the
        server exits or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.running():
                code = self._process.returncode if self._process is not None else None
                raise RuntimeError("tritonserver exited (status {}) before it was ready{}".format(code, self._log_tail()))
            if self.ready() and all(self.ready(m) for m in models):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("tritonserver not ready after {:.0f} s{}".format(timeout_s, self._log_tail()))
            time.sleep(0.2)

    def stop(self, timeout_s: Optional[float] = None) -> Optional[int]:
        """SIGTERM, wait (Triton waits up to exit_timeout_s for in-flight requests), SIGKILL the process group
        if it is still there; then remove the workspace and leftover shared-memory regions. Returns the
        server's exit status. Safe to call twice."""
        process, self._process = self._process, None
        status = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout_s if timeout_s is not None else self.exit_timeout_s + 20)
                except subprocess.TimeoutExpired:
                    logger.warning("tritonserver (pid %d) did not stop after SIGTERM; killing it", process.pid)
            _kill_group(process.pid)
            if process.poll() is None:
                process.wait()
            status = process.returncode
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        left = sorted(n for n in os.listdir(SHM_DIR) if n.startswith(self.shm_prefix)) if os.path.isdir(SHM_DIR) else []
        for region in left:
            try:
                os.unlink(os.path.join(SHM_DIR, region))
                logger.info("removed the shared-memory region %s the server left", region)
            except FileNotFoundError:
                pass
        shutil.rmtree(self.workspace, ignore_errors=True)
        return status

    def kill(self) -> None:
        """SIGKILL the server and its stubs at once (what a crash looks like); stop() still cleans up."""
        if self._process is not None and self._process.poll() is None:
            _kill_group(self._process.pid)
            self._process.wait()

    def __enter__(self) -> "TritonServer":
        if self._process is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- helpers ------------------------------------------------------------------------------------------------

    def _log_tail(self, lines: int = 25) -> str:
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as handle:
                text = handle.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return ":\n" + "\n".join(text[-lines:])


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
