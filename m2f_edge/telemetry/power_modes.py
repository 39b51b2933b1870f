"""Switching nvpmodel power modes for a sweep, and always putting the original state back.

``nvpmodel`` and ``jetson_clocks`` are found on PATH and need root. Before anything changes the
current mode id is recorded and ``jetson_clocks --store`` saves the clock state to a file; on the
way out -- normally, on an exception, on Ctrl-C or SIGTERM -- the original mode is set again and
``jetson_clocks --restore`` puts the clocks back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from typing import Any, Dict, Iterator, List, Optional

from . import jetson
from . import sysroot as sr


class PowerModeError(RuntimeError):
    pass


class PowerModeController(object):
    def __init__(self):
        self.log = []  # type: List[str]   commands run, for the report

    @staticmethod
    def available() -> bool:
        return sr.which("nvpmodel") is not None

    def modes(self) -> List[Dict[str, Any]]:
        catalogue = jetson.power_mode_catalogue()["value"]
        return list((catalogue or {}).get("modes", []))

    def current(self) -> Dict[str, Any]:
        value = jetson.current_power_mode()["value"]
        if not value or value.get("id") is None:
            raise PowerModeError("cannot read the current power mode (`nvpmodel -q` gave no mode id)")
        return value

    def _run(self, argv, input_text=None):
        self.log.append(" ".join(argv))
        return sr.run_command(argv, input_text=input_text)

    def set_mode(self, mode_id: int) -> Dict[str, Any]:
        if not self.available():
            raise PowerModeError("nvpmodel is not on PATH: power modes can only be switched on a Jetson")
        # nvpmodel asks before a mode change that needs a reboot; answer no and report it.
        status, out = self._run(["nvpmodel", "-m", str(int(mode_id))], input_text="NO\n")
        if status != 0 or "NVPM ERROR" in out:
            hint = " (run with sudo)" if ("ermission" in out or (hasattr(os, "geteuid") and os.geteuid() != 0)) else ""
            raise PowerModeError("nvpmodel -m {} failed{}: {}".format(mode_id, hint, out.strip()[-300:]))
        now = self.current()
        if now["id"] != int(mode_id):
            reboot = " (nvpmodel says this mode needs a reboot)" if "eboot" in out else ""
            raise PowerModeError("power mode is still {} after `nvpmodel -m {}`{}".format(now["id"], mode_id, reboot))
        return now

    def lock_clocks(self) -> None:
        status, out = self._run(["jetson_clocks"])
        if status != 0:
            raise PowerModeError("jetson_clocks failed: {}".format(out.strip()[-300:]))

    def store_clocks(self, path: str) -> bool:
        if sr.which("jetson_clocks") is None:
            return False
        status, _ = self._run(["jetson_clocks", "--store", path])
        return status == 0

    def restore_clocks(self, path: str) -> bool:
        status, out = self._run(["jetson_clocks", "--restore", path])
        return status == 0


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so ``finally`` blocks run when the run is killed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def preserved_power_state(controller: Optional[PowerModeController] = None) -> Iterator[PowerModeController]:
    """Record the power mode and clocks; restore both on exit, whatever ends the block.

    Raises PowerModeError up front when the current mode cannot be read, so nothing is changed
    that could not be put back. A failed restore is reported on stderr and does not hide the
    exception that ended the block.
    """
    controller = controller or PowerModeController()
    original = controller.current()
    handle, clock_file = tempfile.mkstemp(prefix="m2f-jetson-clocks-", suffix=".conf")
    os.close(handle)
    clocks_saved = controller.store_clocks(clock_file)
    controller.original_mode = original
    try:
        with _sigterm_as_interrupt():
            yield controller
    finally:
        problems = []
        try:
            controller.set_mode(original["id"])
        except Exception as error:
            problems.append("could not restore power mode {}: {}".format(original["id"], error))
        if clocks_saved and not controller.restore_clocks(clock_file):
            problems.append("could not restore clocks from {}".format(clock_file))
        if not problems:
            with contextlib.suppress(OSError):
                os.unlink(clock_file)
        for problem in problems:
            import sys
            sys.stderr.write("m2f-edge-bench: WARNING: {}\n".format(problem))
