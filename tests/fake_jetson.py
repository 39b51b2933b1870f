"""Fake Jetson system trees (procfs/sysfs/etc/var) and fake ``nvpmodel`` / ``jetson_clocks``.

The trees follow the layouts documented for each board and JetPack (NVIDIA's Jetson Linux
developer guide "Platform Power and Performance" pages, and what jetson-stats reads):

- AGX Orin 64GB, JetPack 5.1.2 (L4T 35.4.1): two INA3221 under hwmon (1-0040: VDD_GPU_SOC,
  VDD_CPU_CV, VIN_SYS_5V0; 1-0041: NC, VDDQ_VDD2_1V8AO, NC), GPU devfreq ``17000000.ga10b``,
  load in ``/sys/devices/gpu.0/load``, EMC rate in BPMP debugfs.
- Orin Nano 8GB devkit, JetPack 6.0 (L4T 36.3.0): one INA3221 (VDD_IN, VDD_CPU_GPU_CV, VDD_SOC),
  GPU devfreq ``17000000.gpu``, load under ``/sys/devices/platform/bus@0/17000000.gpu``, no
  debugfs (not root).
- AGX Xavier, JetPack 4.6.1 (L4T 32.7.1): INA3221 through the old IIO driver ``ina3221x``
  (``rail_name_N``, ``in_powerN_input`` mW), GPU devfreq ``17000000.gv11b`` under gpu.0,
  EMC activity in ``/sys/kernel/actmon_avg_activity/mc_all``.

Every value written is returned in the board's ``expected`` dict so tests assert against the
tree, not against the code that reads it.
"""

import os
import stat
import sys
import textwrap

BOARDS = {
    "agx_orin": {
        "model": "NVIDIA Jetson AGX Orin Developer Kit",
        "compatible": ["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"],
        "release": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
                   "DATE: Tue Aug  1 19:57:35 UTC 2023",
        "l4t": "35.4.1", "jetpack": "5.1.2",
        "modes": [(0, "MAXN"), (1, "MODE_15W"), (2, "MODE_30W"), (3, "MODE_50W")], "default_mode": 3,
        "cpus": 12, "cpu_khz": (115200, 2201600),
        "gpu_devfreq": "/sys/class/devfreq/17000000.ga10b", "gpu_hz": (306000000, 1300500000),
        "gpu_load": "/sys/devices/gpu.0/load",
        "ina3221": {"1-0040": ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"],
                    "1-0041": ["NC", "VDDQ_VDD2_1V8AO", "NC"]},
        # (mV, mA) per connected rail
        "rail_readings": {"VDD_GPU_SOC": (5008, 1840), "VDD_CPU_CV": (5008, 640), "VIN_SYS_5V0": (4984, 1120),
                          "VDDQ_VDD2_1V8AO": (4992, 312)},
        "thermal": [("CPU-therm", 48500), ("GPU-therm", 46200), ("CV0-therm", -256000), ("SOC0-therm", 45100),
                    ("Tboard_tegra", 38000), ("tj-therm", 49100)],
        "emc_debugfs_hz": 3199000000, "memory_kb": 64335568, "cpu_part": ("0x41", "0xd42"),
    },
    "orin_nano": {
        "model": "NVIDIA Jetson Orin Nano Developer Kit",
        "compatible": ["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"],
        "release": "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, "
                   "DATE: Mon May  6 17:34:21 UTC 2024",
        "l4t": "36.3.0", "jetpack": "6.0",
        "modes": [(0, "15W"), (1, "7W")], "default_mode": 0,
        "cpus": 6, "cpu_khz": (115200, 1510400),
        "gpu_devfreq": "/sys/class/devfreq/17000000.gpu", "gpu_hz": (306000000, 624750000),
        "gpu_load": "/sys/devices/platform/bus@0/17000000.gpu/load",
        "ina3221": {"1-0040": ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]},
        "rail_readings": {"VDD_IN": (5040, 1480), "VDD_CPU_GPU_CV": (5040, 560), "VDD_SOC": (5040, 400)},
        "thermal": [("cpu-thermal", 51200), ("gpu-thermal", 50300), ("cv0-thermal", None), ("soc0-thermal", 50000),
                    ("tj-thermal", 51800)],
        "emc_debugfs_hz": None, "memory_kb": 7620692, "cpu_part": ("0x41", "0xd42"),
    },
    "xavier": {
        "model": "Jetson-AGX",
        "compatible": ["nvidia,p2822-0000+p2888-0001", "nvidia,galen", "nvidia,tegra194"],
        "release": "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t186ref, EABI: aarch64, "
                   "DATE: Sat Feb 19 17:05:08 UTC 2022",
        "l4t": "32.7.1", "jetpack": "4.6.1",
        "modes": [(0, "MAXN"), (1, "MODE_10W"), (2, "MODE_15W"), (3, "MODE_30W_ALL")], "default_mode": 2,
        "cpus": 8, "cpu_khz": (115200, 2265600),
        "gpu_devfreq": "/sys/devices/gpu.0/devfreq/17000000.gv11b", "gpu_hz": (114750000, 1377000000),
        "gpu_load": "/sys/devices/gpu.0/load",
        "iio": {"1-0040": ["GPU", "CPU", "SOC"], "1-0041": ["CV", "VDDRQ", "SYS5V"]},
        # (mW) per rail, read from in_powerN_input
        "rail_power_mw": {"GPU": 3100, "CPU": 1500, "SOC": 1900, "CV": 0, "VDDRQ": 600, "SYS5V": 2300},
        "thermal": [("AUX-therm", 41000), ("CPU-therm", 43500), ("GPU-therm", 42000), ("PMIC-Die", 100000),
                    ("Tboard_tegra", 36000), ("Tdiode_tegra", 38250)],
        "emc_debugfs_hz": None, "actmon_mc_all": 12873, "memory_kb": 32530000, "cpu_part": ("0x4e", "0x004"),
    },
}


def _write(root, path, text):
    full = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as handle:
        handle.write(text)
    return full


def _write_bytes(root, path, data):
    full = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as handle:
        handle.write(data)


def set_clocks_locked(root, board, locked):
    """What jetson_clocks does to sysfs: minimum raised to maximum (or put back)."""
    spec = BOARDS[board]
    low, high = spec["gpu_hz"]
    _write(root, spec["gpu_devfreq"] + "/min_freq", "{}\n".format(high if locked else low))
    _write(root, spec["gpu_devfreq"] + "/cur_freq", "{}\n".format(high))
    cpu_low, cpu_high = spec["cpu_khz"]
    for cpu in range(spec["cpus"]):
        base = "/sys/devices/system/cpu/cpu{}/cpufreq/".format(cpu)
        _write(root, base + "scaling_min_freq", "{}\n".format(cpu_high if locked else cpu_low))


def set_gpu_cur_hz(root, board, hz):
    _write(root, BOARDS[board]["gpu_devfreq"] + "/cur_freq", "{}\n".format(int(hz)))


def set_power_mode_status(root, mode_id):
    _write(root, "/var/lib/nvpmodel/status", "pmode:{:04d} fmode:quiet\n".format(mode_id))


def build_tree(root, board, power_mode=None, clocks_locked=False):
    """Lay out ``board``'s tree under ``root``; returns the expected readings."""
    spec = BOARDS[board]
    root = str(root)
    _write_bytes(root, "/proc/device-tree/model", spec["model"].encode() + b"\x00")
    _write_bytes(root, "/proc/device-tree/compatible", b"".join(c.encode() + b"\x00" for c in spec["compatible"]))
    _write(root, "/etc/nv_tegra_release", spec["release"] + "\n")
    conf = ["< PARAM TYPE=FILE NAME=CPU_ONLINE >", "CORE_0 /sys/devices/system/cpu/cpu0/online", ""]
    for mode_id, name in spec["modes"]:
        conf += ["< POWER_MODEL ID={} NAME={} >".format(mode_id, name), "CPU_ONLINE CORE_0 1",
                 "GPU MIN_FREQ 0", "GPU MAX_FREQ -1", ""]
    conf.append("< PM_CONFIG DEFAULT={} >".format(spec["default_mode"]))
    _write(root, "/etc/nvpmodel.conf", "\n".join(conf) + "\n")
    mode = spec["default_mode"] if power_mode is None else power_mode
    set_power_mode_status(root, mode)
    _write(root, "/etc/os-release", 'PRETTY_NAME="Ubuntu 20.04.6 LTS"\nNAME="Ubuntu"\n')
    implementer, part = spec["cpu_part"]
    cpuinfo = "".join("processor\t: {}\nBogoMIPS\t: 62.50\nCPU implementer\t: {}\nCPU part\t: {}\n\n".format(
        n, implementer, part) for n in range(spec["cpus"]))
    _write(root, "/proc/cpuinfo", cpuinfo)
    _write(root, "/proc/meminfo", "MemTotal:       {} kB\nMemFree:         1000000 kB\n".format(spec["memory_kb"]))

    low, high = spec["gpu_hz"]
    devfreq = spec["gpu_devfreq"]
    _write(root, devfreq + "/max_freq", "{}\n".format(high))
    _write(root, devfreq + "/governor", "nvhost_podgov\n")
    _write(root, devfreq + "/available_frequencies", " ".join(str(low + i * (high - low) // 4) for i in range(5)) + "\n")
    _write(root, spec["gpu_load"], "372\n")
    cpu_low, cpu_high = spec["cpu_khz"]
    _write(root, "/sys/devices/system/cpu/online", "0-{}\n".format(spec["cpus"] - 1))
    for cpu in range(spec["cpus"]):
        base = "/sys/devices/system/cpu/cpu{}/".format(cpu)
        if cpu:
            _write(root, base + "online", "1\n")
        _write(root, base + "cpufreq/scaling_cur_freq", "{}\n".format(cpu_high))
        _write(root, base + "cpufreq/scaling_max_freq", "{}\n".format(cpu_high))
        _write(root, base + "cpufreq/scaling_governor", "schedutil\n")
    set_clocks_locked(root, board, clocks_locked)

    temps = {}
    for index, (kind, milli) in enumerate(spec["thermal"]):
        zone = "/sys/class/thermal/thermal_zone{}/".format(index)
        _write(root, zone + "type", kind + "\n")
        if milli is not None:  # None: a powered-down zone whose temp node cannot be read
            _write(root, zone + "temp", "{}\n".format(milli))
            if milli > -40000:
                temps[kind] = milli / 1000.0

    rails_w = {}
    hwmon_index = 0
    # an unrelated hwmon that must be ignored
    _write(root, "/sys/class/hwmon/hwmon0/name", "soctherm_oc\n")
    _write(root, "/sys/class/hwmon/hwmon0/in1_input", "1\n")
    for address, labels in spec.get("ina3221", {}).items():
        hwmon_index += 2
        device = "/sys/bus/i2c/devices/{}".format(address)
        hw = "{}/hwmon/hwmon{}".format(device, hwmon_index)
        _write(root, hw + "/name", "ina3221\n")
        for channel, label in enumerate(labels, start=1):
            _write(root, hw + "/in{}_label".format(channel), label + "\n")
            if label == "NC":
                continue
            millivolt, milliamp = spec["rail_readings"][label]
            _write(root, hw + "/in{}_input".format(channel), "{}\n".format(millivolt))
            _write(root, hw + "/curr{}_input".format(channel), "{}\n".format(milliamp))
            _write(root, hw + "/curr{}_max".format(channel), "32760\n")
            rails_w[label] = millivolt * milliamp / 1e6
        # the shunt-voltage sum channel the driver adds; not a rail
        _write(root, hw + "/in7_label", "sum of shunt voltages\n")
        _write(root, hw + "/in7_input", "1\n")
        _write(root, hw + "/curr7_input", "1\n")
        # /sys/class/hwmon/hwmonN and the driver directory are symlinks to the device, as on a board
        os.makedirs(os.path.join(root, "sys/class/hwmon"), exist_ok=True)
        os.symlink(os.path.join(root, hw.lstrip("/")), os.path.join(root, "sys/class/hwmon/hwmon{}".format(hwmon_index)))
        os.makedirs(os.path.join(root, "sys/bus/i2c/drivers/ina3221"), exist_ok=True)
        os.symlink(os.path.join(root, device.lstrip("/")), os.path.join(root, "sys/bus/i2c/drivers/ina3221", address))
    for address, labels in spec.get("iio", {}).items():
        device = "/sys/bus/i2c/drivers/ina3221x/{}/iio:device{}".format(address, 0 if address.endswith("40") else 1)
        for channel, label in enumerate(labels):
            milliwatt = spec["rail_power_mw"][label]
            _write(root, device + "/rail_name_{}".format(channel), label + "\n")
            _write(root, device + "/in_power{}_input".format(channel), "{}\n".format(milliwatt))
            _write(root, device + "/in_voltage{}_input".format(channel), "5000\n")
            _write(root, device + "/in_current{}_input".format(channel), "{}\n".format(milliwatt // 5))
            rails_w[label] = milliwatt / 1000.0

    if spec.get("emc_debugfs_hz"):
        _write(root, "/sys/kernel/debug/bpmp/debug/clk/emc/rate", "{}\n".format(spec["emc_debugfs_hz"]))
        _write(root, "/sys/kernel/debug/bpmp/debug/clk/emc/max_rate", "{}\n".format(spec["emc_debugfs_hz"]))
    if spec.get("actmon_mc_all") is not None:
        _write(root, "/sys/kernel/actmon_avg_activity/mc_all", "{}\n".format(spec["actmon_mc_all"]))

    _write(root, "/.clocks_locked", "1" if clocks_locked else "0")
    total_rail = next((r for r in ("VDD_IN", "POM_5V_IN") if r in rails_w), None)
    return {
        "board": board, "model": spec["model"], "l4t": spec["l4t"], "jetpack": spec["jetpack"],
        "modes": [{"id": i, "name": n} for i, n in spec["modes"]], "default_mode": spec["default_mode"],
        "power_mode": mode, "power_mode_name": dict(spec["modes"])[mode],
        "gpu_max_mhz": high / 1e6, "gpu_min_mhz": low / 1e6, "cpus": spec["cpus"], "cpu_max_mhz": cpu_high / 1e3,
        "temperatures": temps, "rails_w": rails_w,
        "total_w": rails_w[total_rail] if total_rail else sum(rails_w.values()), "total_rail": total_rail,
        "emc_mhz": spec["emc_debugfs_hz"] / 1e6 if spec.get("emc_debugfs_hz") else None,
        "memory_gib": round(spec["memory_kb"] / 1024.0 / 1024.0, 2),
    }


_NVPMODEL = r'''#!{python}
# Fake nvpmodel: records every call, keeps the mode in the fake tree's /var/lib/nvpmodel/status.
import os, re, sys
ROOT = {root!r}
MODES = {modes!r}
LOG = {log!r}
FAIL_SET = {fail_set!r}
REBOOT_MODES = {reboot_modes!r}
with open(LOG, "a") as log:
    log.write("nvpmodel " + " ".join(sys.argv[1:]) + "\n")
status_path = os.path.join(ROOT, "var/lib/nvpmodel/status")
def current():
    with open(status_path) as handle:
        return int(re.search(r"pmode:(\d+)", handle.read()).group(1))
args = sys.argv[1:]
if args[:1] == ["-q"]:
    print("NVPM WARN: fan mode is not set!")
    print("NV Power Mode: " + MODES[current()])
    print(current())
elif args[:1] == ["-p"]:
    for mode_id in sorted(MODES):
        print("NVPM VERB: POWER_MODEL: ID={{}} NAME={{}}".format(mode_id, MODES[mode_id]))
elif args[:1] == ["-m"]:
    mode_id = int(args[1])
    if mode_id not in MODES:
        print("NVPM ERROR: Invalid mode ID {{}}".format(mode_id)); sys.exit(1)
    if mode_id in FAIL_SET:
        print("NVPM ERROR: failed to set power mode {{}}".format(mode_id)); sys.exit(1)
    if mode_id in REBOOT_MODES:
        print("NVPM WARN: Reboot required for changing to this power mode: {{}}".format(mode_id))
        print("NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:")
        answer = sys.stdin.readline().strip()
        print("NVPM WARN: user declined reboot" if answer.lower() != "yes" else "rebooting")
        sys.exit(0)
    with open(status_path, "w") as handle:
        handle.write("pmode:{{:04d}} fmode:quiet\n".format(mode_id))
    # a mode change puts the clocks back under DVFS, as on a board
    open(os.path.join(ROOT, ".clocks_locked"), "w").write("0")
    sys.path.insert(0, {tests_dir!r})
    import fake_jetson
    fake_jetson.set_clocks_locked(ROOT, {board!r}, False)
else:
    print("usage: nvpmodel [-q] [-m id] [-p --verbose]"); sys.exit(2)
'''

_JETSON_CLOCKS = r'''#!{python}
# Fake jetson_clocks: --show / --store FILE / --restore FILE / (none) = lock; records every call.
import os, sys
sys.path.insert(0, {tests_dir!r})
import fake_jetson
ROOT = {root!r}
BOARD = {board!r}
LOG = {log!r}
with open(LOG, "a") as log:
    log.write("jetson_clocks " + " ".join(sys.argv[1:]) + "\n")
state = os.path.join(ROOT, ".clocks_locked")
locked = os.path.exists(state) and open(state).read().strip() == "1"
spec = fake_jetson.BOARDS[BOARD]
args = sys.argv[1:]
def set_locked(value):
    open(state, "w").write("1" if value else "0")
    fake_jetson.set_clocks_locked(ROOT, BOARD, value)
if args[:1] == ["--show"]:
    low, high = spec["cpu_khz"]
    print("SOC family:tegra234  Machine:" + spec["model"])
    print("Online CPUs: 0-{{}}".format(spec["cpus"] - 1))
    for cpu in range(spec["cpus"]):
        print("cpu{{}}: Online=1 Governor=schedutil MinFreq={{}} MaxFreq={{}} CurrentFreq={{}} IdleStates: WFI=1 c7=1".format(
            cpu, high if locked else low, high, high))
    glow, ghigh = spec["gpu_hz"]
    print("GPU MinFreq={{}} MaxFreq={{}} CurrentFreq={{}}".format(ghigh if locked else glow, ghigh, ghigh))
    print("EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride={{}}".format(int(locked)))
    print("FAN Dynamic Speed control=active hwmon4 :pwm1=0")
elif args[:1] == ["--store"]:
    open(args[1], "w").write("locked={{}}\n".format(int(locked)))
elif args[:1] == ["--restore"]:
    text = open(args[1]).read()
    set_locked("locked=1" in text)
elif not args:
    set_locked(True)
else:
    print("usage"); sys.exit(2)
'''


def _make_exe(path, text):
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def install_fake_tools(root, board, bin_dir, fail_set=(), reboot_modes=(), with_jetson_clocks=True):
    """Write fake ``nvpmodel`` (and ``jetson_clocks``) into bin_dir; returns the call-log path."""
    root, bin_dir = str(root), str(bin_dir)
    os.makedirs(bin_dir, exist_ok=True)
    log = os.path.join(bin_dir, "calls.log")
    open(log, "w").close()
    modes = dict(BOARDS[board]["modes"])
    _make_exe(os.path.join(bin_dir, "nvpmodel"), textwrap.dedent(_NVPMODEL).format(
        python=sys.executable, root=root, modes=modes, log=log, fail_set=list(fail_set), board=board,
        tests_dir=os.path.dirname(os.path.abspath(__file__)),
        reboot_modes=list(reboot_modes)))
    if with_jetson_clocks:
        _make_exe(os.path.join(bin_dir, "jetson_clocks"), textwrap.dedent(_JETSON_CLOCKS).format(
            python=sys.executable, tests_dir=os.path.dirname(os.path.abspath(__file__)), root=root, board=board,
            log=log))
    return log


def read_calls(log):
    with open(log) as handle:
        return [line.strip() for line in handle if line.strip()]


def clocks_locked_state(root):
    path = os.path.join(str(root), ".clocks_locked")
    return os.path.exists(path) and open(path).read().strip() == "1"
