"""Facts true of any machine: CPU, memory, OS, Python and library versions, the core's build."""

from __future__ import annotations

import os
import platform
import re
import sys
from typing import Any, Dict, Optional

from . import sysroot as sr
from .facts import fact, missing

# /proc/cpuinfo on ARM names the core by "CPU implementer" + "CPU part", not by a model name.
_ARM_PARTS = {
    ("0x41", "0xd07"): "Arm Cortex-A57", ("0x41", "0xd08"): "Arm Cortex-A72",
    ("0x41", "0xd42"): "Arm Cortex-A78AE", ("0x41", "0xd4f"): "Arm Neoverse-V2",
    ("0x4e", "0x004"): "NVIDIA Carmel", ("0x41", "0xd0c"): "Arm Neoverse-N1",
}


def cpu_model() -> Dict[str, Any]:
    text = sr.read_text("/proc/cpuinfo")
    if text:
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return fact(match.group(1).strip(), "/proc/cpuinfo")
        implementer = re.search(r"^CPU implementer\s*:\s*(\S+)", text, re.MULTILINE)
        part = re.search(r"^CPU part\s*:\s*(\S+)", text, re.MULTILINE)
        if implementer and part:
            key = (implementer.group(1).lower(), part.group(1).lower())
            name = _ARM_PARTS.get(key, "ARM implementer {} part {}".format(*key))
            return fact(name, "/proc/cpuinfo")
    processor = platform.processor() or platform.machine()
    return fact(processor, "platform.processor()") if processor else missing("/proc/cpuinfo", "unreadable")


def cpu_count() -> Dict[str, Any]:
    """Processors listed in /proc/cpuinfo (so a replayed tree reports its own board), else os.cpu_count()."""
    text = sr.read_text("/proc/cpuinfo")
    count = len(re.findall(r"^processor\s*:", text or "", re.MULTILINE))
    if count:
        return fact(count, "/proc/cpuinfo")
    return fact(os.cpu_count(), "os.cpu_count()")


def memory_total_gib() -> Dict[str, Any]:
    text = sr.read_text("/proc/meminfo")
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", text or "", re.MULTILINE)
    if not match:
        return missing("/proc/meminfo", "MemTotal not readable")
    return fact(round(int(match.group(1)) / 1024.0 / 1024.0, 2), "/proc/meminfo")


def os_release() -> Dict[str, Any]:
    text = sr.read_text("/etc/os-release")
    match = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', text or "", re.MULTILINE)
    if match:
        return fact(match.group(1), "/etc/os-release")
    return fact(platform.platform(), "platform.platform()")


def package_version(name: str, module: Optional[str] = None) -> Dict[str, Any]:
    """Installed version of a distribution, without importing it where metadata is enough."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover  (Python < 3.8 is not supported anyway)
        metadata = None
    if metadata is not None:
        for dist in (name, name.replace("_", "-")):
            try:
                return fact(metadata.version(dist), "package metadata")
            except Exception:
                pass
    try:
        mod = __import__(module or name)
        version = getattr(mod, "__version__", None)
        if version:
            return fact(str(version), "{}.__version__".format(module or name))
    except Exception:
        pass
    return missing(name, "not installed")


def onnxruntime_facts() -> Dict[str, Any]:
    try:
        import onnxruntime
    except ImportError:
        return missing("onnxruntime", "not installed")
    return fact({"version": onnxruntime.__version__, "providers": list(onnxruntime.get_available_providers())},
                "onnxruntime")


def core_build() -> Dict[str, Any]:
    try:
        from .. import build_info
        return fact(dict(build_info()), "m2f_edge.build_info()")
    except Exception as error:  # the extension may not be built in a source checkout
        return missing("m2f_edge.build_info()", "core not importable: {}".format(error))


def collect() -> Dict[str, Any]:
    import numpy

    return {
        "hostname": fact(platform.node(), "platform.node()"),
        "machine": fact(platform.machine(), "platform.machine()"),
        "cpu_model": cpu_model(),
        "cpu_count": cpu_count(),
        "memory_gib": memory_total_gib(),
        "os": os_release(),
        "kernel": fact(platform.release(), "platform.release()"),
        "python": fact(sys.version.split()[0], "sys.version"),
        "numpy": fact(numpy.__version__, "numpy.__version__"),
        "onnxruntime": onnxruntime_facts(),
        "opencv": package_version("opencv-python-headless", "cv2") if _has_dist("opencv-python-headless")
        else package_version("opencv-python", "cv2"),
        "tensorrt": package_version("tensorrt"),
        "m2f_edge_core": core_build(),
    }


def _has_dist(name: str) -> bool:
    try:
        from importlib import metadata
        metadata.version(name)
        return True
    except Exception:
        return False
