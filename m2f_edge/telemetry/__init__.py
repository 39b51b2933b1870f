"""Platform telemetry: what machine this is, how it is clocked and powered, and what it draws.

Every reading is optional and labelled with its source (``{"value": ..., "source": ...}``).
Jetson facts come from jetson-stats (``jtop``, optional AGPL extra) when its service answers,
otherwise from sysfs, procfs and ``nvpmodel -q`` directly; discrete GPUs from NVML
(``nvidia-ml-py``, optional). All system paths are read under ``M2F_SYSROOT`` (default ``/``);
``nvpmodel`` and ``jetson_clocks`` are found on PATH.
"""

from __future__ import annotations

from typing import Any, Dict

from . import host, jetson
from .facts import fact, missing, value_of
from .jtop_adapter import JtopSource
from .nvml import NvmlSource
from .power_modes import PowerModeController, PowerModeError, preserved_power_state
from .sampler import PowerSampler, open_power_source


def collect_platform(use_jtop: bool = True, use_nvml: bool = True) -> Dict[str, Any]:
    """All platform facts: ``{"host": ..., "jetson": ... or None, "nvml": ..., "notes": [...]}``."""
    notes = []
    info = {"host": host.collect(), "jetson": None, "nvml": None, "notes": notes}
    if jetson.is_jetson():
        facts = jetson.collect()
        if use_jtop:
            with JtopSource() as source:
                if source.available:
                    # jtop's view wins where it has one; sysfs keeps the rest
                    facts.update(source.facts())
                else:
                    notes.append(source.reason)
        info["jetson"] = facts
    elif use_nvml:
        with NvmlSource() as nvml:
            if nvml.available:
                info["nvml"] = nvml.facts()
            else:
                notes.append(nvml.reason)
    return info


__all__ = [
    "collect_platform", "fact", "missing", "value_of", "host", "jetson", "JtopSource", "NvmlSource",
    "PowerModeController", "PowerModeError", "preserved_power_state", "PowerSampler", "open_power_source",
]
