"""Every /proc, /sys, /etc and /var read goes through here, under the root named by M2F_SYSROOT.

A tree captured on a device (or built by a test) can then be replayed anywhere: set
``M2F_SYSROOT=/path/to/capture`` and the readers see that tree instead of the live system.
Commands (``nvpmodel``, ``jetson_clocks``) are looked up on PATH, so tests stand them in with fake
executables.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from typing import List, Optional, Sequence, Tuple

SYSROOT_ENV = "M2F_SYSROOT"
COMMAND_TIMEOUT_S = 20.0


def sysroot() -> str:
    return os.environ.get(SYSROOT_ENV) or "/"


def host_path(path: str) -> str:
    """The on-disk location of an absolute system path such as ``/proc/device-tree/model``."""
    root = sysroot()
    if root == "/":
        return path
    return os.path.join(root, path.lstrip("/"))


def display_path(real_path: str) -> str:
    """Inverse of host_path for labelling: the system path a reading came from."""
    root = sysroot()
    if root == "/":
        return real_path
    rel = os.path.relpath(real_path, root)
    return "/" + rel.replace(os.sep, "/")


def read_text(path: str, real: bool = False) -> Optional[str]:
    """Text of a system file with NULs and surrounding whitespace removed; None when unreadable.

    Device-tree strings end in NUL and some sysfs nodes answer EAGAIN or EINVAL while their
    block is powered down: both count as "no reading", never as an error.
    """
    full = path if real else host_path(path)
    try:
        with open(full, "rb") as handle:
            data = handle.read()
    except (OSError, ValueError):
        return None
    return data.replace(b"\x00", b"\n").decode("utf-8", "replace").strip()


def read_int(path: str, real: bool = False) -> Optional[int]:
    text = read_text(path, real=real)
    if text is None:
        return None
    token = text.split()[0] if text.split() else ""
    try:
        return int(token)
    except ValueError:
        return None


def glob_paths(pattern: str) -> List[str]:
    """Real paths matching an absolute system glob pattern, sorted naturally (hwmon2 < hwmon10)."""
    return sorted(glob.glob(host_path(pattern)), key=_natural_key)


def _natural_key(text: str):
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def which(command: str) -> Optional[str]:
    return shutil.which(command)


def run_command(argv: Sequence[str], input_text: Optional[str] = None,
                timeout: float = COMMAND_TIMEOUT_S) -> Tuple[int, str]:
    """Run a command found on PATH; returns (exit status, stdout+stderr). Never raises for a
    missing command (status 127) or a timeout (status 124): telemetry is best effort."""
    exe = which(argv[0])
    if exe is None:
        return 127, "{} not found on PATH".format(argv[0])
    try:
        done = subprocess.run([exe] + list(argv[1:]), input=input_text if input_text is not None else "",
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                              universal_newlines=True)
    except subprocess.TimeoutExpired:
        return 124, "{} timed out after {:.0f} s".format(argv[0], timeout)
    except OSError as error:
        return 126, "{} could not run: {}".format(argv[0], error)
    return done.returncode, done.stdout
