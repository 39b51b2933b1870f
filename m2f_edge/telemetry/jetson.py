"""Jetson facts read straight from procfs, sysfs, /etc, /var and ``nvpmodel -q``.

All paths go through :mod:`m2f_edge.telemetry.sysroot` (``M2F_SYSROOT``). Layouts honoured:

- board: ``/proc/device-tree/model`` and ``compatible`` (NUL-separated);
- release: ``/etc/nv_tegra_release`` (``# R35 (release), REVISION: 4.1, ...`` = L4T 35.4.1);
- power modes: ``nvpmodel -q`` (``NV Power Mode: MAXN`` then the id on its own line), else
  ``/var/lib/nvpmodel/status`` (``pmode:0002``) named through ``/etc/nvpmodel.conf``
  (``< POWER_MODEL ID=2 NAME=15W >``, ``< PM_CONFIG DEFAULT=2 >``);
- GPU clock: devfreq nodes ``/sys/class/devfreq/<17000000.ga10b|17000000.gpu|17000000.gv11b>``
  or ``/sys/devices/gpu.0/devfreq/*`` (Hz); load 0..1000 in ``/sys/devices/gpu.0/load`` or
  ``/sys/devices/platform/bus@0/17000000.gpu/load``;
- EMC clock: ``/sys/kernel/debug/bpmp/debug/clk/emc/rate`` (root, Hz), utilisation
  ``/sys/kernel/actmon_avg_activity/mc_all``;
- CPU clocks: ``/sys/devices/system/cpu/cpuN/cpufreq/scaling_{cur,min,max}_freq`` (kHz);
- temperatures: ``/sys/class/thermal/thermal_zoneN/{type,temp}`` (milli-degC; powered-down
  zones answer an error or -256000 and are skipped);
- power: INA3221 under hwmon (``inN_label``, ``inN_input`` mV, ``currN_input`` mA; labels ``NC``
  and channel 7, the shunt sum, skipped), INA238-class monitors under hwmon (``power1_input`` uW),
  and the JetPack 4 IIO layout (``rail_name_N``, ``in_powerN_input`` mW).
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Tuple

from . import sysroot as sr
from .facts import fact, missing

# L4T release -> JetPack, for the releases whose pairing NVIDIA publishes.
L4T_TO_JETPACK = {
    "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4", "32.7.5": "4.6.5",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
    "35.6.0": "5.1.4", "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2",
    "36.4.4": "6.2.1",
}

TOTAL_RAIL_NAMES = ("VDD_IN", "POM_5V_IN", "5V_IN")
GPU_DEVFREQ_HINTS = ("gpu", "ga10b", "gv11b", "gp10b", "gm20b")


# ----------------------------------------------------------------------------- identity
def is_jetson() -> bool:
    if os.path.exists(sr.host_path("/etc/nv_tegra_release")):
        return True
    compatible = sr.read_text("/proc/device-tree/compatible") or ""
    return "nvidia,tegra" in compatible or "nvidia,p3" in compatible


def board_model() -> Dict[str, Any]:
    text = sr.read_text("/proc/device-tree/model")
    if not text:
        return missing("/proc/device-tree/model", "not present (not a device-tree board)")
    return fact(text.splitlines()[0], "/proc/device-tree/model")


def board_compatible() -> Dict[str, Any]:
    text = sr.read_text("/proc/device-tree/compatible")
    if not text:
        return missing("/proc/device-tree/compatible", "not present")
    return fact([line for line in text.splitlines() if line], "/proc/device-tree/compatible")


def parse_nv_tegra_release(text: str) -> Optional[str]:
    """``# R35 (release), REVISION: 4.1, GCID: ...`` -> ``"35.4.1"``."""
    match = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)", text)
    if not match:
        return None
    revision = match.group(2).rstrip(".")
    if revision.count(".") == 0:
        revision += ".0"
    return "{}.{}".format(match.group(1), revision)


def l4t_release() -> Dict[str, Any]:
    text = sr.read_text("/etc/nv_tegra_release")
    if text is None:
        return missing("/etc/nv_tegra_release", "not present")
    release = parse_nv_tegra_release(text)
    if release is None:
        return missing("/etc/nv_tegra_release", "unrecognised format: {!r}".format(text[:80]))
    return fact(release, "/etc/nv_tegra_release")


def jetpack_release(l4t: Optional[str]) -> Dict[str, Any]:
    if not l4t:
        return missing("L4T release", "unknown L4T release")
    jetpack = L4T_TO_JETPACK.get(l4t)
    if jetpack is None:
        return missing("L4T release", "L4T {} is not in the known JetPack pairing".format(l4t))
    return fact(jetpack, "mapped from L4T {}".format(l4t))


# ----------------------------------------------------------------------------- nvpmodel
def parse_nvpmodel_query(text: str) -> Tuple[Optional[int], Optional[str]]:
    """Output of ``nvpmodel -q``: a ``NV Power Mode: NAME`` line, then the id on its own line
    (warning lines such as ``NVPM WARN: ...`` may come first)."""
    lines = [line.strip() for line in text.splitlines()]
    for index, line in enumerate(lines):
        match = re.search(r"NV Power Mode:\s*(\S.*)$", line)
        if match:
            name = match.group(1).strip()
            for follow in lines[index + 1:]:
                if follow.isdigit():
                    return int(follow), name
                if follow:
                    break
            return None, name
    return None, None


def parse_nvpmodel_conf(text: str) -> Tuple[List[Dict[str, Any]], Optional[int]]:
    """``/etc/nvpmodel.conf``: the modes ``[{"id", "name"}]`` and the boot default id."""
    modes = []
    for match in re.finditer(r"<\s*POWER_MODEL\s+ID\s*=\s*(\d+)\s+NAME\s*=\s*([^\s>]+)\s*>", text):
        modes.append({"id": int(match.group(1)), "name": match.group(2)})
    default = re.search(r"<\s*PM_CONFIG\s+DEFAULT\s*=\s*(\d+)\s*>", text)
    return modes, (int(default.group(1)) if default else None)


def parse_nvpmodel_verbose_list(text: str) -> List[Dict[str, Any]]:
    """``nvpmodel -p --verbose``: lines such as ``NVPM VERB: POWER_MODEL: ID=0 NAME=MAXN``."""
    modes = []
    for match in re.finditer(r"POWER_MODEL:\s*ID=(\d+)\s+NAME=(\S+)", text):
        modes.append({"id": int(match.group(1)), "name": match.group(2)})
    return modes


def power_mode_catalogue() -> Dict[str, Any]:
    """All power modes of this board, from /etc/nvpmodel.conf, else ``nvpmodel -p --verbose``."""
    text = sr.read_text("/etc/nvpmodel.conf")
    if text:
        modes, default = parse_nvpmodel_conf(text)
        if modes:
            return fact({"modes": modes, "default": default}, "/etc/nvpmodel.conf")
    status, out = sr.run_command(["nvpmodel", "-p", "--verbose"])
    if status == 0:
        modes = parse_nvpmodel_verbose_list(out)
        if modes:
            return fact({"modes": modes, "default": None}, "nvpmodel -p --verbose")
    return missing("/etc/nvpmodel.conf", "no power-mode catalogue (nvpmodel.conf absent and nvpmodel unusable)")


def current_power_mode() -> Dict[str, Any]:
    """The active nvpmodel mode ``{"id", "name"}``: ``nvpmodel -q``, else /var/lib/nvpmodel/status."""
    status, out = sr.run_command(["nvpmodel", "-q"])
    if status == 0:
        mode_id, name = parse_nvpmodel_query(out)
        if mode_id is not None or name:
            return fact({"id": mode_id, "name": name}, "nvpmodel -q")
    text = sr.read_text("/var/lib/nvpmodel/status")
    if text:
        match = re.search(r"pmode:\s*(\d+)", text)
        if match:
            mode_id = int(match.group(1))
            name = None
            catalogue = power_mode_catalogue()
            for mode in (catalogue["value"] or {}).get("modes", []):
                if mode["id"] == mode_id:
                    name = mode["name"]
            return fact({"id": mode_id, "name": name}, "/var/lib/nvpmodel/status")
    return missing("nvpmodel -q", "nvpmodel not usable and /var/lib/nvpmodel/status absent")


# ----------------------------------------------------------------------------- clocks
def _gpu_devfreq_dir() -> Optional[str]:
    candidates = sr.glob_paths("/sys/class/devfreq/*") + sr.glob_paths("/sys/devices/gpu.0/devfreq/*")
    for path in candidates:
        name = os.path.basename(path).lower()
        if any(hint in name for hint in GPU_DEVFREQ_HINTS):
            return path
    return None


def gpu_clock() -> Dict[str, Any]:
    """GPU devfreq: current/min/max frequency in MHz and the governor."""
    node = _gpu_devfreq_dir()
    if node is None:
        return missing("/sys/class/devfreq", "no GPU devfreq node")
    values = {}
    for key in ("cur_freq", "min_freq", "max_freq"):
        hz = sr.read_int(os.path.join(node, key), real=True)
        values[key.replace("_freq", "_mhz")] = None if hz is None else hz / 1e6
    values["governor"] = sr.read_text(os.path.join(node, "governor"), real=True)
    available = sr.read_text(os.path.join(node, "available_frequencies"), real=True)
    if available:
        try:
            values["available_max_mhz"] = max(int(tok) for tok in available.split()) / 1e6
        except ValueError:
            pass
    return fact(values, sr.display_path(node))


def gpu_load() -> Dict[str, Any]:
    """GPU busy fraction 0..1 (the node counts 0..1000)."""
    for path in ("/sys/devices/gpu.0/load", "/sys/devices/platform/bus@0/17000000.gpu/load",
                 "/sys/devices/platform/17000000.gpu/load", "/sys/devices/17000000.gv11b/load"):
        value = sr.read_int(path)
        if value is not None:
            return fact(value / 1000.0, path)
    node = _gpu_devfreq_dir()
    if node is not None:
        value = sr.read_int(os.path.join(node, "device", "load"), real=True)
        if value is not None:
            return fact(value / 1000.0, sr.display_path(os.path.join(node, "device", "load")))
    return missing("/sys/devices/gpu.0/load", "no GPU load node")


def emc_clock() -> Dict[str, Any]:
    """Memory-controller clock in MHz (BPMP debugfs, readable by root) and utilisation if exposed."""
    values = {}
    source = None
    for base in ("/sys/kernel/debug/bpmp/debug/clk/emc", "/sys/kernel/debug/clk/emc"):
        rate = sr.read_int(base + "/rate")
        if rate is None:
            rate = sr.read_int(base + "/clk_rate")
        if rate is not None:
            values["cur_mhz"] = rate / 1e6
            for key in ("min_rate", "max_rate"):
                limit = sr.read_int(base + "/" + key)
                if limit is not None:
                    values[key.replace("_rate", "_mhz")] = limit / 1e6
            source = base
            break
    activity = sr.read_int("/sys/kernel/actmon_avg_activity/mc_all")
    if activity is not None:
        values["actmon_mc_all"] = activity
        source = source or "/sys/kernel/actmon_avg_activity/mc_all"
    if not values:
        return missing("/sys/kernel/debug/bpmp/debug/clk/emc/rate", "not readable (debugfs needs root)")
    return fact(values, source)


def cpu_clocks() -> Dict[str, Any]:
    """Per-CPU current/min/max frequency in MHz and governor, for online CPUs with cpufreq."""
    cpus = {}
    for cpu_dir in sr.glob_paths("/sys/devices/system/cpu/cpu[0-9]*"):
        name = os.path.basename(cpu_dir)
        online = sr.read_int(os.path.join(cpu_dir, "online"), real=True)
        if online == 0:
            continue
        freq_dir = os.path.join(cpu_dir, "cpufreq")
        cur = sr.read_int(os.path.join(freq_dir, "scaling_cur_freq"), real=True)
        if cur is None:
            continue
        low = sr.read_int(os.path.join(freq_dir, "scaling_min_freq"), real=True)
        high = sr.read_int(os.path.join(freq_dir, "scaling_max_freq"), real=True)
        cpus[name] = {
            "cur_mhz": cur / 1e3,
            "min_mhz": None if low is None else low / 1e3,
            "max_mhz": None if high is None else high / 1e3,
            "governor": sr.read_text(os.path.join(freq_dir, "scaling_governor"), real=True),
        }
    if not cpus:
        return missing("/sys/devices/system/cpu/cpu*/cpufreq", "no cpufreq nodes")
    return fact(cpus, "/sys/devices/system/cpu/cpu*/cpufreq")


def parse_jetson_clocks_show(text: str) -> Dict[str, Any]:
    """``jetson_clocks --show``: CPU/GPU/EMC min/max/current lines -> locked or not."""
    cpu_locked = []
    gpu = None
    for match in re.finditer(r"cpu\d+: Online=(\d) Governor=\S+ MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", text):
        if match.group(1) == "1":
            cpu_locked.append(match.group(2) == match.group(3))
    match = re.search(r"GPU MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", text)
    if match:
        gpu = match.group(1) == match.group(2)
    checks = cpu_locked + ([gpu] if gpu is not None else [])
    return {"locked": bool(checks) and all(checks), "cpu_locked": bool(cpu_locked) and all(cpu_locked),
            "gpu_locked": gpu}


def jetson_clocks_state() -> Dict[str, Any]:
    """Whether clocks are locked at their maximum (jetson_clocks on).

    ``jetson_clocks --show`` needs root; without it the same test is made on sysfs: the GPU
    devfreq minimum equals its maximum and every online CPU's scaling minimum equals its maximum.
    """
    status, out = sr.run_command(["jetson_clocks", "--show"])
    if status == 0 and ("MinFreq" in out):
        parsed = parse_jetson_clocks_show(out)
        return fact(parsed["locked"], "jetson_clocks --show")
    gpu = gpu_clock()["value"]
    cpus = cpu_clocks()["value"]
    checks = []
    if gpu and gpu.get("min_mhz") is not None and gpu.get("max_mhz") is not None:
        checks.append(gpu["min_mhz"] == gpu["max_mhz"])
    for cpu in (cpus or {}).values():
        if cpu["min_mhz"] is not None and cpu["max_mhz"] is not None:
            checks.append(cpu["min_mhz"] == cpu["max_mhz"])
    if not checks:
        return missing("sysfs devfreq/cpufreq", "no clock limits readable")
    return fact(all(checks), "sysfs: GPU devfreq and cpufreq min == max")


# ----------------------------------------------------------------------------- thermal
def temperatures() -> Dict[str, Any]:
    """Thermal zones by type, in degC; zones that do not answer are left out."""
    temps = {}
    for zone in sr.glob_paths("/sys/class/thermal/thermal_zone*"):
        kind = sr.read_text(os.path.join(zone, "type"), real=True)
        milli = sr.read_int(os.path.join(zone, "temp"), real=True)
        if not kind or milli is None or milli <= -40000:
            continue
        temps[kind] = milli / 1000.0
    if not temps:
        return missing("/sys/class/thermal/thermal_zone*", "no thermal zone answered")
    return fact(temps, "/sys/class/thermal/thermal_zone*/{type,temp}")


# ----------------------------------------------------------------------------- power
class Rail(object):
    """One power-monitor channel and how to read it in milliwatts."""

    __slots__ = ("label", "source", "power_path", "power_scale", "volt_path", "curr_path")

    def __init__(self, label, source, power_path=None, power_scale=1.0, volt_path=None, curr_path=None):
        self.label = label
        self.source = source
        self.power_path = power_path
        self.power_scale = power_scale
        self.volt_path = volt_path
        self.curr_path = curr_path

    def read_mw(self) -> Optional[float]:
        if self.power_path is not None:
            value = sr.read_int(self.power_path, real=True)
            if value is not None:
                return value * self.power_scale
        if self.volt_path is not None and self.curr_path is not None:
            millivolt = sr.read_int(self.volt_path, real=True)
            milliamp = sr.read_int(self.curr_path, real=True)
            if millivolt is not None and milliamp is not None:
                return millivolt * milliamp / 1000.0
        return None


def _hwmon_dirs() -> List[str]:
    seen = set()
    dirs = []
    patterns = ("/sys/class/hwmon/hwmon*", "/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*",
                "/sys/bus/i2c/drivers/ina238/*/hwmon/hwmon*")
    for pattern in patterns:
        for path in sr.glob_paths(pattern):
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                dirs.append(path)
    return dirs


def _hwmon_name(path: str) -> str:
    return (sr.read_text(os.path.join(path, "name"), real=True)
            or sr.read_text(os.path.join(path, "device", "name"), real=True) or "")


def _ina3221_rails(path: str) -> List[Rail]:
    rails = []
    for label_path in sr.glob_paths(sr.display_path(os.path.join(path, "in*_label"))):
        match = re.match(r"in(\d+)_label$", os.path.basename(label_path))
        if not match:
            continue
        channel = int(match.group(1))
        label = sr.read_text(label_path, real=True) or ""
        # channel 7 is the INA3221's sum of shunt voltages; "NC" marks an unconnected channel
        if channel == 7 or not label or label.upper() == "NC" or "sum of shunt" in label.lower():
            continue
        volt = os.path.join(path, "in{}_input".format(channel))
        curr = os.path.join(path, "curr{}_input".format(channel))
        if not os.path.exists(curr):
            continue
        rails.append(Rail(label, sr.display_path(path), volt_path=volt, curr_path=curr))
    return rails


def _single_channel_rail(path: str, chip: str) -> Optional[Rail]:
    label = None
    for candidate in ("label", "power1_label", "curr1_label", "in1_label", "device/label", "of_node/label"):
        label = sr.read_text(os.path.join(path, candidate), real=True)
        if label:
            break
    if not label:
        device = os.path.basename(os.path.realpath(os.path.join(path, "device"))) if os.path.exists(
            os.path.join(path, "device")) else os.path.basename(path)
        label = "{}@{}".format(chip, device)
    power = os.path.join(path, "power1_input")
    if os.path.exists(power):
        return Rail(label, sr.display_path(path), power_path=power, power_scale=1e-3)
    volt = os.path.join(path, "in1_input")
    curr = os.path.join(path, "curr1_input")
    if os.path.exists(volt) and os.path.exists(curr):
        return Rail(label, sr.display_path(path), volt_path=volt, curr_path=curr)
    return None


def _iio_rails() -> List[Rail]:
    rails = []
    for device in sr.glob_paths("/sys/bus/i2c/drivers/ina3221x/*/iio:device*"):
        for name_path in sr.glob_paths(sr.display_path(os.path.join(device, "rail_name_*"))):
            channel = os.path.basename(name_path)[len("rail_name_"):]
            label = sr.read_text(name_path, real=True)
            if not label:
                continue
            rails.append(Rail(label, sr.display_path(device),
                              power_path=os.path.join(device, "in_power{}_input".format(channel)),
                              volt_path=os.path.join(device, "in_voltage{}_input".format(channel)),
                              curr_path=os.path.join(device, "in_current{}_input".format(channel))))
    return rails


def discover_rails() -> List[Rail]:
    """Every power rail this board exposes, labelled by its monitor's rail name."""
    rails = []
    for path in _hwmon_dirs():
        chip = _hwmon_name(path)
        if chip.startswith("ina3221"):
            rails.extend(_ina3221_rails(path))
        elif chip.startswith(("ina238", "ina237", "ina226", "ina219", "ina260", "ina228")):
            rail = _single_channel_rail(path, chip)
            if rail is not None:
                rails.append(rail)
    rails.extend(_iio_rails())
    unique = {}
    for rail in rails:
        unique.setdefault(rail.label, rail)
    return list(unique.values())


class RailReader(object):
    """Reads all rails and the board total in watts; the rails are found once at construction."""

    def __init__(self, rails: Optional[List[Rail]] = None):
        self.rails = discover_rails() if rails is None else rails
        names = [rail.label for rail in self.rails]
        self.total_rail = next((name for name in TOTAL_RAIL_NAMES if name in names), None)
        if self.total_rail:
            self.total_source = "rail {}".format(self.total_rail)
        else:
            self.total_source = "sum of rails {}".format("+".join(names)) if names else None

    @property
    def available(self) -> bool:
        return bool(self.rails)

    def read(self) -> Tuple[Optional[float], Dict[str, float]]:
        """(total watts or None, {rail label: watts})."""
        rails = {}
        for rail in self.rails:
            mw = rail.read_mw()
            if mw is not None:
                rails[rail.label] = mw / 1000.0
        if not rails:
            return None, rails
        if self.total_rail is not None:
            return rails.get(self.total_rail), rails
        return sum(rails.values()), rails


def power_snapshot() -> Dict[str, Any]:
    reader = RailReader()
    if not reader.available:
        return missing("/sys/class/hwmon (ina3221/ina238)", "no power monitor found")
    total, rails = reader.read()
    sources = sorted(set(rail.source for rail in reader.rails))
    return fact({"total_w": total, "total_source": reader.total_source, "rails_w": rails},
                ", ".join(sources))


# ----------------------------------------------------------------------------- all at once
def collect() -> Dict[str, Any]:
    """Every Jetson fact this module knows, each labelled with its source."""
    l4t = l4t_release()
    return {
        "is_jetson": is_jetson(),
        "board_model": board_model(),
        "compatible": board_compatible(),
        "l4t": l4t,
        "jetpack": jetpack_release(l4t["value"]),
        "power_mode": current_power_mode(),
        "power_modes": power_mode_catalogue(),
        "jetson_clocks": jetson_clocks_state(),
        "gpu_clock": gpu_clock(),
        "gpu_load": gpu_load(),
        "emc_clock": emc_clock(),
        "cpu_clocks": cpu_clocks(),
        "temperatures": temperatures(),
        "power": power_snapshot(),
    }
