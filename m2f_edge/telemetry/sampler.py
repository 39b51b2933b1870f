"""Power, clock and temperature sampled in a background thread through a timed window.

A *source* has ``name``, ``total_source`` (what its watts mean) and ``sample() -> dict`` with
``watts`` (board or GPU total, or None), ``gpu_mhz``, ``temp_c`` and optionally ``slowdown`` (a
list of reasons the hardware reports). :func:`open_power_source` picks the best one here: jtop
when its service answers, else Jetson sysfs rails, else NVML on a discrete GPU.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from . import jetson
from .jtop_adapter import JtopSource
from .nvml import NvmlSource

_TEMP_PREFERENCE = ("tj-thermal", "Tboard_tegra", "GPU-therm", "gpu-thermal", "cpu-thermal", "CPU-therm")


def _hottest_relevant(temps: Dict[str, float]) -> Optional[float]:
    for name in _TEMP_PREFERENCE:
        if name in temps:
            return temps[name]
    return max(temps.values()) if temps else None


class JetsonSysfsSource(object):
    """INA3221/INA238 rails, GPU devfreq clock and the junction temperature, read from sysfs."""

    name = "sysfs"

    def __init__(self, rail_reader: Optional[jetson.RailReader] = None, power=None):
        self.rails = rail_reader if rail_reader is not None else jetson.RailReader()
        self._power = power  # optional callable -> (total_w, rails) replacing the rails (jtop)
        self.total_source = self.rails.total_source
        self._gpu_node = jetson._gpu_devfreq_dir()

    @property
    def has_power(self) -> bool:
        return self._power is not None or self.rails.available

    def sample(self) -> Dict[str, Any]:
        watts = self._power()[0] if self._power is not None else self.rails.read()[0]
        gpu_mhz = None
        if self._gpu_node is not None:
            from . import sysroot as sr
            hz = sr.read_int(os.path.join(self._gpu_node, "cur_freq"), real=True)
            gpu_mhz = None if hz is None else hz / 1e6
        temps = jetson.temperatures()["value"] or {}
        return {"watts": watts, "gpu_mhz": gpu_mhz, "temp_c": _hottest_relevant(temps)}


class NvmlSampleSource(object):
    name = "nvml"
    total_source = "NVML board power of GPU 0"

    def __init__(self, nvml: NvmlSource):
        self.nvml = nvml

    has_power = True

    def sample(self) -> Dict[str, Any]:
        return {"watts": self.nvml.power_w(), "gpu_mhz": self.nvml.sm_clock_mhz(),
                "temp_c": self.nvml.temperature_c(), "slowdown": self.nvml.slowdown_reasons()}


def open_power_source(use_jtop: bool = True) -> Tuple[Optional[Any], List[str], List[Any]]:
    """(source or None, notes saying what was tried and why it was not used, handles to close)."""
    notes = []
    handles = []
    if jetson.is_jetson():
        if use_jtop:
            jtop_source = JtopSource()
            if jtop_source.available:
                handles.append(jtop_source)
                source = JetsonSysfsSource(power=jtop_source.read_power)
                source.name = "jtop"
                source.total_source = "jtop total"
                return source, notes, handles
            notes.append(jtop_source.reason)
        source = JetsonSysfsSource()
        if source.rails.available:
            return source, notes, handles
        notes.append("no INA3221/INA238 power monitor found under /sys/class/hwmon")
        return source, notes, handles  # clocks and temperatures still sampled
    nvml = NvmlSource()
    if nvml.available:
        handles.append(nvml)
        return NvmlSampleSource(nvml), notes, handles
    notes.append(nvml.reason)
    return None, notes, handles


class PowerSampler(object):
    """Samples a source every ``period_s`` in a daemon thread; use as a context manager."""

    def __init__(self, source, period_s: float = 0.1):
        self.source = source
        self.period_s = period_s
        self.samples = []  # type: List[Tuple[float, Dict[str, Any]]]
        self.errors = []  # type: List[str]
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> "PowerSampler":
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="m2f-power-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.perf_counter()
            try:
                self.samples.append((now, self.source.sample()))
            except Exception as error:  # a sensor hiccup must not end the benchmark
                if len(self.errors) < 10:
                    self.errors.append(str(error))
            self._stop.wait(max(0.0, self.period_s - (time.perf_counter() - now)))

    def summary(self, start: float, end: float, frames: int, clocks_locked: Optional[bool] = None) -> Dict[str, Any]:
        """Average watts, joules, joules per frame and throttling over [start, end] (perf_counter).

        Waits (up to three sampling periods) for a sample after ``end`` so that the power at the
        window's end is interpolated, not extrapolated."""
        give_up = time.perf_counter() + 3 * self.period_s
        while self._thread is not None and time.perf_counter() < give_up and \
                not (self.samples and self.samples[-1][0] >= end):
            time.sleep(self.period_s / 4)
        return summarize(self.samples, start, end, frames, clocks_locked,
                         getattr(self.source, "total_source", None), getattr(self.source, "name", None))


def _interpolate(points, x):
    """Linear interpolation of watts at time x between the samples around it (clamped at the ends)."""
    if x <= points[0][0]:
        return points[0][1]
    if x >= points[-1][0]:
        return points[-1][1]
    for (t0, w0), (t1, w1) in zip(points, points[1:]):
        if t0 <= x <= t1:
            return w0 if t1 == t0 else w0 + (w1 - w0) * (x - t0) / (t1 - t0)
    return points[-1][1]


def summarize(samples, start, end, frames, clocks_locked=None, total_source=None, source_name=None):
    """Energy over [start, end] by the trapezoid rule on the power samples, with the power at the
    window's edges interpolated from the samples around them -- so a window shorter than the
    sampling period still gets a (coarser) reading."""
    window = [(t, s) for t, s in samples if start <= t <= end]
    power = sorted((t, s["watts"]) for t, s in samples if s.get("watts") is not None)
    out = {"source": source_name, "total_source": total_source, "samples": len(window),
           "avg_w": None, "energy_j": None, "j_per_frame": None, "max_w": None}
    if power:
        points = [(start, _interpolate(power, start))] + [(t, w) for t, w in power if start < t < end] + \
                 [(end, _interpolate(power, end))]
        energy = sum(0.5 * (w0 + w1) * (t1 - t0) for (t0, w0), (t1, w1) in zip(points, points[1:]))
        out["avg_w"] = energy / (end - start) if end > start else points[0][1]
        out["energy_j"] = out["avg_w"] * (end - start)
        out["max_w"] = max(w for _, w in points)
    if out["energy_j"] is not None and frames:
        out["j_per_frame"] = out["energy_j"] / frames
    out["throttling"] = detect_throttling(window, clocks_locked)
    return out


def detect_throttling(window, clocks_locked=None) -> Dict[str, Any]:
    """Clocks falling under load.

    With clocks locked (jetson_clocks on) any GPU clock more than 5% under the window's highest
    reading is a throttle. With DVFS active clocks move with load, so only a sustained fall (the
    last third's median more than 15% under the first third's) counts, and it is reported as
    "possible". Hardware-reported slowdown reasons (NVML) are reported as they come.
    """
    clocks = [s["gpu_mhz"] for _, s in window if s.get("gpu_mhz")]
    temps = [s["temp_c"] for _, s in window if s.get("temp_c") is not None]
    reasons = sorted(set(r for _, s in window for r in (s.get("slowdown") or [])
                         if r in ("hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake", "sw_power_cap")))
    result = {"detected": False, "reasons": reasons, "gpu_mhz_min": min(clocks) if clocks else None,
              "gpu_mhz_max": max(clocks) if clocks else None,
              "temp_c_start": temps[0] if temps else None, "temp_c_end": temps[-1] if temps else None,
              "note": None}
    if reasons:
        result["detected"] = True
        result["note"] = "hardware reports slowdown: " + ", ".join(reasons)
        return result
    if len(clocks) < 3:
        result["note"] = "too few clock samples to judge"
        return result
    top = max(clocks)
    if clocks_locked:
        low = min(clocks)
        if low < 0.95 * top:
            result["detected"] = True
            result["note"] = "GPU clock fell from {:.0f} to {:.0f} MHz with clocks locked".format(top, low)
        return result
    third = max(1, len(clocks) // 3)
    first = sorted(clocks[:third])[third // 2]
    last = sorted(clocks[-third:])[third // 2]
    if last < 0.85 * first:
        result["detected"] = True
        result["note"] = "possible: GPU clock median fell from {:.0f} to {:.0f} MHz under load (DVFS active)".format(
            first, last)
    return result
