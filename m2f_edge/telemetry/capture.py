"""Copy the system files the telemetry reads into a folder, for replay with ``M2F_SYSROOT``.

Symbolic links are followed and every file is written as a plain file at the path it was read
from (``/sys/class/hwmon/hwmon3/in1_label`` stays that path), so the copy replays on any machine:
``M2F_SYSROOT=<folder> m2f-edge-bench ...``. Unreadable files (debugfs without root, powered-down
thermal zones) are skipped. Outputs of ``nvpmodel -q`` and ``jetson_clocks --show`` are saved beside
the tree, in ``m2f_commands.txt``, for the human reading a bug report.
"""

from __future__ import annotations

import os
from typing import Dict

from . import sysroot as sr

PATTERNS = (
    "/proc/device-tree/model", "/proc/device-tree/compatible", "/proc/cpuinfo", "/proc/meminfo",
    "/etc/nv_tegra_release", "/etc/nvpmodel.conf", "/etc/os-release", "/var/lib/nvpmodel/status",
    "/sys/class/devfreq/*/cur_freq", "/sys/class/devfreq/*/min_freq", "/sys/class/devfreq/*/max_freq",
    "/sys/class/devfreq/*/governor", "/sys/class/devfreq/*/available_frequencies", "/sys/class/devfreq/*/device/load",
    "/sys/devices/gpu.0/devfreq/*/cur_freq", "/sys/devices/gpu.0/devfreq/*/min_freq",
    "/sys/devices/gpu.0/devfreq/*/max_freq", "/sys/devices/gpu.0/devfreq/*/governor",
    "/sys/devices/gpu.0/devfreq/*/available_frequencies",
    "/sys/devices/gpu.0/load", "/sys/devices/platform/bus@0/17000000.gpu/load",
    "/sys/devices/platform/17000000.gpu/load", "/sys/devices/17000000.gv11b/load",
    "/sys/kernel/debug/bpmp/debug/clk/emc/rate", "/sys/kernel/debug/bpmp/debug/clk/emc/min_rate",
    "/sys/kernel/debug/bpmp/debug/clk/emc/max_rate", "/sys/kernel/debug/clk/emc/clk_rate",
    "/sys/kernel/actmon_avg_activity/mc_all",
    "/sys/devices/system/cpu/online", "/sys/devices/system/cpu/cpu[0-9]*/online",
    "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq",
    "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_min_freq",
    "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_max_freq",
    "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor",
    "/sys/class/thermal/thermal_zone*/type", "/sys/class/thermal/thermal_zone*/temp",
)
HWMON_DIRS = ("/sys/class/hwmon/hwmon*", "/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*",
              "/sys/bus/i2c/drivers/ina238/*/hwmon/hwmon*")
HWMON_FILES = ("name", "label", "device/name", "device/label", "of_node/label", "*_label", "*_input")
IIO_FILES = ("rail_name_*", "in_power*_input", "in_voltage*_input", "in_current*_input")


def _patterns():
    for pattern in PATTERNS:
        yield pattern
    for directory in HWMON_DIRS:
        for name in HWMON_FILES:
            yield directory + "/" + name
    for name in IIO_FILES:
        yield "/sys/bus/i2c/drivers/ina3221x/*/iio:device*/" + name


def capture(destination: str) -> Dict[str, int]:
    """Copy what the readers use from the current sysroot into ``destination``; returns counts."""
    copied = skipped = 0
    for pattern in _patterns():
        for real in sr.glob_paths(pattern):
            if not os.path.isfile(real):
                continue
            try:
                with open(real, "rb") as handle:
                    data = handle.read()
            except OSError:
                skipped += 1
                continue
            target = os.path.join(destination, sr.display_path(real).lstrip("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(data)
            copied += 1
    with open(os.path.join(destination, "m2f_commands.txt"), "w") as handle:
        for argv in (["nvpmodel", "-q"], ["jetson_clocks", "--show"]):
            status, out = sr.run_command(argv)
            handle.write("$ {}   (exit {})\n{}\n\n".format(" ".join(argv), status, out.rstrip()))
    return {"copied": copied, "unreadable": skipped}
