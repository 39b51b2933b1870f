"""NVML (``nvidia-ml-py``, imported as ``pynvml``) for discrete NVIDIA GPUs: power, clocks, temperature.

Optional extra ``pip install 'm2f-edge[nvml]'``. Jetson's integrated GPU has no NVML; there the
sysfs readers in :mod:`m2f_edge.telemetry.jetson` answer instead.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .facts import fact

INSTALL_HINT = "pip install 'm2f-edge[nvml]' (nvidia-ml-py)"

# nvmlClocksEventReasons / ClocksThrottleReasons bits that mean the GPU was slowed down
_SLOWDOWN_BITS = {
    0x0000000000000004: "sw_power_cap",
    0x0000000000000008: "hw_slowdown",
    0x0000000000000020: "sw_thermal",
    0x0000000000000040: "hw_thermal",
    0x0000000000000080: "hw_power_brake",
}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlSource(object):
    """An initialised NVML handle for one GPU, or the reason there is none."""

    name = "nvml"

    def __init__(self, index: int = 0):
        self.reason = None  # type: Optional[str]
        self._nvml = None
        self._handle = None
        try:
            import pynvml
        except ImportError:
            self.reason = "nvidia-ml-py is not installed: " + INSTALL_HINT
            return
        try:
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as error:
            self.reason = "NVML did not initialise ({}); no NVIDIA driver or GPU {}".format(error, index)
            return
        self._nvml = pynvml

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, name, *args):
        try:
            return getattr(self._nvml, name)(*args)
        except Exception:
            return None

    def power_w(self) -> Optional[float]:
        milliwatts = self._call("nvmlDeviceGetPowerUsage", self._handle)
        return None if milliwatts is None else milliwatts / 1000.0

    def sm_clock_mhz(self) -> Optional[float]:
        clock = self._call("nvmlDeviceGetClockInfo", self._handle, getattr(self._nvml, "NVML_CLOCK_SM", 1))
        return None if clock is None else float(clock)

    def mem_clock_mhz(self) -> Optional[float]:
        clock = self._call("nvmlDeviceGetClockInfo", self._handle, getattr(self._nvml, "NVML_CLOCK_MEM", 2))
        return None if clock is None else float(clock)

    def temperature_c(self) -> Optional[float]:
        temp = self._call("nvmlDeviceGetTemperature", self._handle, getattr(self._nvml, "NVML_TEMPERATURE_GPU", 0))
        return None if temp is None else float(temp)

    def slowdown_reasons(self):
        """Names of the active slowdown reasons (thermal, power cap, ...); None when not reported."""
        mask = self._call("nvmlDeviceGetCurrentClocksEventReasons", self._handle)
        if mask is None:
            mask = self._call("nvmlDeviceGetCurrentClocksThrottleReasons", self._handle)
        if mask is None:
            return None
        return sorted(name for bit, name in _SLOWDOWN_BITS.items() if mask & bit)

    def facts(self) -> Dict[str, Any]:
        if self._nvml is None:
            return {}
        out = {}
        name = self._call("nvmlDeviceGetName", self._handle)
        if name is not None:
            out["gpu_name"] = fact(_text(name), "nvml")
        driver = self._call("nvmlSystemGetDriverVersion")
        if driver is not None:
            out["driver_version"] = fact(_text(driver), "nvml")
        limit = self._call("nvmlDeviceGetEnforcedPowerLimit", self._handle)
        if limit is not None:
            out["power_limit_w"] = fact(limit / 1000.0, "nvml")
        for key, value in (("power_w", self.power_w()), ("sm_clock_mhz", self.sm_clock_mhz()),
                           ("mem_clock_mhz", self.mem_clock_mhz()), ("temperature_c", self.temperature_c())):
            if value is not None:
                out[key] = fact(value, "nvml")
        return out
