"""Telemetry against fake AGX Orin / Orin Nano / Xavier trees (tests/fake_jetson.py)."""

import os
import sys
import types

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fake_jetson  # noqa: E402
from m2f_edge import telemetry  # noqa: E402
from m2f_edge.telemetry import jetson, power_modes, sampler  # noqa: E402
from m2f_edge.telemetry.jtop_adapter import JtopSource  # noqa: E402
from m2f_edge.telemetry.nvml import NvmlSource  # noqa: E402


@pytest.fixture
def no_tools(tmp_path, monkeypatch):
    """PATH without nvpmodel/jetson_clocks (the sysfs fallbacks must answer alone)."""
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setitem(sys.modules, "jtop", None)
    return empty


def _tree(tmp_path, monkeypatch, board, **kwargs):
    root = tmp_path / "root"
    expected = fake_jetson.build_tree(root, board, **kwargs)
    monkeypatch.setenv("M2F_SYSROOT", str(root))
    return root, expected


@pytest.mark.parametrize("board", ["agx_orin", "orin_nano", "xavier"])
def test_sysfs_facts_match_the_tree(tmp_path, monkeypatch, no_tools, board):
    root, expected = _tree(tmp_path, monkeypatch, board)
    facts = jetson.collect()
    assert facts["is_jetson"] is True
    assert facts["board_model"] == {"value": expected["model"], "source": "/proc/device-tree/model"}
    assert facts["l4t"]["value"] == expected["l4t"]
    assert facts["jetpack"]["value"] == expected["jetpack"]
    # without nvpmodel on PATH the mode comes from /var/lib/nvpmodel/status, named by nvpmodel.conf
    assert facts["power_mode"]["source"] == "/var/lib/nvpmodel/status"
    assert facts["power_mode"]["value"] == {"id": expected["power_mode"], "name": expected["power_mode_name"]}
    assert facts["power_modes"]["value"]["modes"] == expected["modes"]
    assert facts["power_modes"]["value"]["default"] == expected["default_mode"]
    gpu = facts["gpu_clock"]["value"]
    assert gpu["max_mhz"] == pytest.approx(expected["gpu_max_mhz"])
    assert gpu["min_mhz"] == pytest.approx(expected["gpu_min_mhz"])
    assert gpu["governor"] == "nvhost_podgov"
    assert facts["gpu_load"]["value"] == pytest.approx(0.372)
    cpus = facts["cpu_clocks"]["value"]
    assert len(cpus) == expected["cpus"]
    assert all(c["max_mhz"] == pytest.approx(expected["cpu_max_mhz"]) for c in cpus.values())
    assert facts["temperatures"]["value"] == pytest.approx(expected["temperatures"])
    assert facts["jetson_clocks"]["value"] is False
    assert facts["jetson_clocks"]["source"].startswith("sysfs")
    power = facts["power"]["value"]
    assert power["rails_w"] == pytest.approx(expected["rails_w"])
    assert power["total_w"] == pytest.approx(expected["total_w"])
    if expected["total_rail"]:
        assert power["total_source"] == "rail " + expected["total_rail"]
    else:
        assert power["total_source"].startswith("sum of rails")
    if expected["emc_mhz"]:
        assert facts["emc_clock"]["value"]["cur_mhz"] == pytest.approx(expected["emc_mhz"])
    elif board == "xavier":
        assert facts["emc_clock"]["value"]["actmon_mc_all"] == 12873
    else:
        assert facts["emc_clock"]["value"] is None and "root" in facts["emc_clock"]["note"]


def test_unconnected_and_shunt_sum_channels_are_not_rails(tmp_path, monkeypatch, no_tools):
    _tree(tmp_path, monkeypatch, "agx_orin")
    labels = sorted(rail.label for rail in jetson.discover_rails())
    assert labels == ["VDDQ_VDD2_1V8AO", "VDD_CPU_CV", "VDD_GPU_SOC", "VIN_SYS_5V0"]


def test_clocks_locked_detected_from_sysfs(tmp_path, monkeypatch, no_tools):
    _tree(tmp_path, monkeypatch, "orin_nano", clocks_locked=True)
    state = jetson.jetson_clocks_state()
    assert state["value"] is True and state["source"].startswith("sysfs")


def test_nvpmodel_and_jetson_clocks_commands_preferred(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "jtop", None)
    root, expected = _tree(tmp_path, monkeypatch, "agx_orin", power_mode=2, clocks_locked=True)
    bin_dir = tmp_path / "bin"
    fake_jetson.install_fake_tools(root, "agx_orin", bin_dir)
    monkeypatch.setenv("PATH", str(bin_dir))
    mode = jetson.current_power_mode()
    assert mode == {"value": {"id": 2, "name": "MODE_30W"}, "source": "nvpmodel -q"}
    clocks = jetson.jetson_clocks_state()
    assert clocks == {"value": True, "source": "jetson_clocks --show"}


def test_ina238_monitor_under_hwmon(tmp_path, monkeypatch, no_tools):
    root = tmp_path / "root"
    hw = root / "sys/class/hwmon/hwmon5"
    hw.mkdir(parents=True)
    (hw / "name").write_text("ina238\n")
    (hw / "label").write_text("VDD_IN\n")
    (hw / "power1_input").write_text("7250000\n")  # microwatts
    (hw / "in1_input").write_text("19000\n")
    (hw / "curr1_input").write_text("381\n")
    monkeypatch.setenv("M2F_SYSROOT", str(root))
    reader = jetson.RailReader()
    total, rails = reader.read()
    assert rails == pytest.approx({"VDD_IN": 7.25})
    assert total == pytest.approx(7.25) and reader.total_source == "rail VDD_IN"


def test_parsers_on_documented_formats():
    assert jetson.parse_nvpmodel_query("NVPM WARN: fan mode is not set!\nNV Power Mode: MAXN_SUPER\n2\n") == (
        2, "MAXN_SUPER")
    assert jetson.parse_nvpmodel_query("NV Power Mode: 15W\n0\n") == (0, "15W")
    assert jetson.parse_nvpmodel_query("garbage") == (None, None)
    assert jetson.parse_nv_tegra_release("# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic") == "36.4.3"
    assert jetson.parse_nv_tegra_release("# R32 (release), REVISION: 7, GCID: 1") == "32.7.0"
    modes, default = jetson.parse_nvpmodel_conf("< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=1 NAME=7W >\n"
                                                "< PM_CONFIG DEFAULT=0 >\n")
    assert modes == [{"id": 0, "name": "15W"}, {"id": 1, "name": "7W"}] and default == 0
    shown = jetson.parse_jetson_clocks_show(
        "cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: C1=1\n"
        "cpu1: Online=0 Governor=schedutil MinFreq=115200 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: C1=1\n"
        "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000\n")
    assert shown["locked"] is True  # the offline CPU does not count
    shown = jetson.parse_jetson_clocks_show("GPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=1300500000\n")
    assert shown["locked"] is False


def test_host_facts_from_tree(tmp_path, monkeypatch, no_tools):
    _, expected = _tree(tmp_path, monkeypatch, "agx_orin")
    facts = telemetry.host.collect()
    assert facts["cpu_model"]["value"] == "Arm Cortex-A78AE"
    assert facts["memory_gib"]["value"] == pytest.approx(expected["memory_gib"])
    assert facts["os"]["value"] == "Ubuntu 20.04.6 LTS"
    assert facts["cpu_count"] == {"value": expected["cpus"], "source": "/proc/cpuinfo"}
    assert facts["python"]["value"] == sys.version.split()[0]
    _tree(tmp_path / "x", monkeypatch, "xavier")
    assert telemetry.host.cpu_model()["value"] == "NVIDIA Carmel"


# ----------------------------------------------------------------------------- jtop
def _fake_jtop_module(start_error=None):
    module = types.ModuleType("jtop")

    class FakeJtop(object):
        def __init__(self, interval=1.0):
            self.interval = interval
            self.closed = False

        def start(self):
            if start_error:
                raise start_error

        def ok(self):
            return True

        def close(self):
            self.closed = True

        power = {"rail": {"VDD_CPU_GPU_CV": {"power": 2800, "avg": 2700}, "VDD_SOC": {"power": 1200}},
                 "tot": {"power": 7400, "avg": 7300, "name": "VDD_IN"}}
        board = {"hardware": {"Model": "NVIDIA Jetson Orin Nano Developer Kit", "L4T": "36.3.0", "Jetpack": "6.0"}}
        nvpmodel = types.SimpleNamespace(id=0, name="15W")
        jetson_clocks = False

    module.jtop = FakeJtop
    return module


def test_jtop_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "jtop", None)
    source = JtopSource()
    assert not source.available
    assert "jetson-stats is not installed" in source.reason and "m2f-edge[jetson]" in source.reason
    assert source.read_power() == (None, {})


def test_jtop_service_down_is_reported(monkeypatch):
    error = RuntimeError("The jtop.service is not active. Please run:\nsudo systemctl restart jtop.service")
    monkeypatch.setitem(sys.modules, "jtop", _fake_jtop_module(start_error=error))
    source = JtopSource()
    assert not source.available
    assert "did not answer" in source.reason and "jtop.service is not active" in source.reason


def test_jtop_readings_when_service_answers(monkeypatch):
    monkeypatch.setitem(sys.modules, "jtop", _fake_jtop_module())
    with JtopSource() as source:
        assert source.available
        total, rails = source.read_power()
        assert total == pytest.approx(7.4) and rails == pytest.approx({"VDD_CPU_GPU_CV": 2.8, "VDD_SOC": 1.2})
        facts = source.facts()
    assert facts["power_mode"] == {"value": {"id": 0, "name": "15W"}, "source": "jtop"}
    assert facts["jetpack"]["value"] == "6.0" and facts["jetson_clocks"]["value"] is False


def test_platform_falls_back_to_sysfs_when_jtop_service_down(tmp_path, monkeypatch, no_tools):
    _, expected = _tree(tmp_path, monkeypatch, "orin_nano")
    monkeypatch.setitem(sys.modules, "jtop", _fake_jtop_module(start_error=RuntimeError("socket refused")))
    info = telemetry.collect_platform()
    assert info["jetson"]["power"]["source"].startswith("/sys/")
    assert info["jetson"]["power"]["value"]["total_w"] == pytest.approx(expected["total_w"])
    assert any("jtop service did not answer" in note for note in info["notes"])
    source, notes, handles = sampler.open_power_source()
    assert source.name == "sysfs" and any("socket refused" in n for n in notes)


def test_platform_uses_jtop_when_it_answers(tmp_path, monkeypatch, no_tools):
    _tree(tmp_path, monkeypatch, "orin_nano")
    monkeypatch.setitem(sys.modules, "jtop", _fake_jtop_module())
    info = telemetry.collect_platform()
    assert info["jetson"]["power"]["source"] == "jtop"
    assert info["jetson"]["temperatures"]["source"].startswith("/sys/class/thermal")
    source, _, handles = sampler.open_power_source()
    assert source.name == "jtop" and source.sample()["watts"] == pytest.approx(7.4)
    for handle in handles:
        handle.close()


# ----------------------------------------------------------------------------- NVML
def _fake_pynvml(power_mw=71234, reasons=0):
    module = types.ModuleType("pynvml")
    module.NVML_CLOCK_SM, module.NVML_CLOCK_MEM, module.NVML_TEMPERATURE_GPU = 1, 2, 0
    module.nvmlInit = lambda: None
    module.nvmlShutdown = lambda: None
    module.nvmlDeviceGetHandleByIndex = lambda index: ("gpu", index)
    module.nvmlDeviceGetName = lambda h: b"NVIDIA L4"
    module.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    module.nvmlDeviceGetPowerUsage = lambda h: power_mw
    module.nvmlDeviceGetEnforcedPowerLimit = lambda h: 72000
    module.nvmlDeviceGetClockInfo = lambda h, kind: {1: 2040, 2: 6251}[kind]
    module.nvmlDeviceGetTemperature = lambda h, kind: 61
    module.nvmlDeviceGetCurrentClocksEventReasons = lambda h: reasons
    return module


def test_nvml_missing_gives_install_hint(tmp_path, monkeypatch, no_tools):
    monkeypatch.setenv("M2F_SYSROOT", str(tmp_path))  # an empty tree: not a Jetson
    monkeypatch.setitem(sys.modules, "pynvml", None)
    source = NvmlSource()
    assert not source.available and "nvidia-ml-py is not installed" in source.reason
    info = telemetry.collect_platform()
    assert info["jetson"] is None and info["nvml"] is None
    assert any("nvidia-ml-py" in note for note in info["notes"])
    power, notes, _ = sampler.open_power_source()
    assert power is None and any("m2f-edge[nvml]" in n for n in notes)


def test_nvml_readings_and_slowdown(tmp_path, monkeypatch, no_tools):
    monkeypatch.setenv("M2F_SYSROOT", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(reasons=0x40 | 0x1))
    info = telemetry.collect_platform()
    assert info["nvml"]["gpu_name"]["value"] == "NVIDIA L4"
    assert info["nvml"]["power_w"]["value"] == pytest.approx(71.234)
    assert info["nvml"]["power_limit_w"]["value"] == pytest.approx(72.0)
    source, _, handles = sampler.open_power_source()
    sample = source.sample()
    assert sample == {"watts": pytest.approx(71.234), "gpu_mhz": 2040.0, "temp_c": 61.0, "slowdown": ["hw_thermal"]}
    summary = sampler.summarize([(0.0, sample), (0.5, sample), (1.0, sample)], 0.0, 1.0, frames=10)
    assert summary["throttling"]["detected"] and summary["throttling"]["reasons"] == ["hw_thermal"]


# ----------------------------------------------------------------------------- sampler
def test_power_sampler_energy_over_window(tmp_path, monkeypatch, no_tools):
    _, expected = _tree(tmp_path, monkeypatch, "orin_nano")
    source, notes, _ = sampler.open_power_source()
    assert source.name == "sysfs" and source.has_power
    import time
    with sampler.PowerSampler(source, period_s=0.02) as power:
        start = time.perf_counter()
        time.sleep(0.3)
        # a starved sampler thread (a loaded 2-core CI machine) may take fewer samples in 0.3 s: wait for them
        deadline = time.perf_counter() + 30
        while sum(t >= start for t, _ in list(power.samples)) < 5 and time.perf_counter() < deadline:
            time.sleep(0.02)
        end = time.perf_counter()
    summary = power.summary(start, end, frames=30)
    assert summary["samples"] >= 5
    assert summary["avg_w"] == pytest.approx(expected["total_w"])
    assert summary["energy_j"] == pytest.approx(expected["total_w"] * (end - start))
    assert summary["j_per_frame"] == pytest.approx(summary["energy_j"] / 30)
    assert summary["total_source"] == "rail VDD_IN"
    assert summary["throttling"]["detected"] is False


def test_trapezoid_energy_on_a_ramp():
    samples = [(float(t), {"watts": 10.0 + t}) for t in range(5)]  # 10..14 W over 4 s
    summary = sampler.summarize(samples, 0.0, 4.0, frames=8)
    assert summary["avg_w"] == pytest.approx(12.0)
    assert summary["energy_j"] == pytest.approx(48.0) and summary["j_per_frame"] == pytest.approx(6.0)
    assert summary["max_w"] == pytest.approx(14.0)


def test_throttle_detection():
    def window(clocks):
        return [(float(i), {"gpu_mhz": c, "temp_c": 50.0 + i}) for i, c in enumerate(clocks)]

    steady = sampler.detect_throttling(window([1300] * 9), clocks_locked=True)
    assert not steady["detected"]
    locked_drop = sampler.detect_throttling(window([1300] * 6 + [1100] * 3), clocks_locked=True)
    assert locked_drop["detected"] and "1300 to 1100" in locked_drop["note"]
    dvfs_wiggle = sampler.detect_throttling(window([1300, 900, 1300, 1300, 1000, 1300, 1300, 1200, 1300]))
    assert not dvfs_wiggle["detected"]
    dvfs_fall = sampler.detect_throttling(window([1300] * 3 + [1200] * 3 + [800] * 3))
    assert dvfs_fall["detected"] and dvfs_fall["note"].startswith("possible")
    assert dvfs_fall["temp_c_start"] == 50.0 and dvfs_fall["temp_c_end"] == 58.0


# ----------------------------------------------------------------------------- power modes
@pytest.fixture
def orin_with_tools(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "jtop", None)
    root, expected = _tree(tmp_path, monkeypatch, "agx_orin", power_mode=2, clocks_locked=True)
    bin_dir = tmp_path / "bin"
    log = fake_jetson.install_fake_tools(root, "agx_orin", bin_dir, fail_set=[1], reboot_modes=[3])
    monkeypatch.setenv("PATH", str(bin_dir))
    return root, log


def test_power_mode_restored_after_a_failure(orin_with_tools):
    root, log = orin_with_tools
    with pytest.raises(ZeroDivisionError):
        with power_modes.preserved_power_state() as control:
            control.set_mode(0)
            assert jetson.current_power_mode()["value"]["id"] == 0
            assert not fake_jetson.clocks_locked_state(root)  # the mode change unlocked them
            1 / 0
    assert jetson.current_power_mode()["value"] == {"id": 2, "name": "MODE_30W"}
    assert fake_jetson.clocks_locked_state(root)
    calls = fake_jetson.read_calls(log)
    store = [c for c in calls if c.startswith("jetson_clocks --store")]
    restore = [c for c in calls if c.startswith("jetson_clocks --restore")]
    assert len(store) == 1 and len(restore) == 1 and store[0].split()[-1] == restore[0].split()[-1]
    assert calls.index(store[0]) < calls.index("nvpmodel -m 0") < calls.index("nvpmodel -m 2") < calls.index(restore[0])


def test_power_mode_restored_after_ctrl_c(orin_with_tools):
    root, log = orin_with_tools
    with pytest.raises(KeyboardInterrupt):
        with power_modes.preserved_power_state() as control:
            control.set_mode(0)
            control.lock_clocks()
            raise KeyboardInterrupt
    assert jetson.current_power_mode()["value"]["id"] == 2
    assert fake_jetson.clocks_locked_state(root)
    assert "nvpmodel -m 2" in fake_jetson.read_calls(log)


def test_set_mode_errors_are_clear(orin_with_tools):
    control = power_modes.PowerModeController()
    with pytest.raises(power_modes.PowerModeError, match="nvpmodel -m 1 failed"):
        control.set_mode(1)
    with pytest.raises(power_modes.PowerModeError, match="needs a reboot"):
        control.set_mode(3)
    assert [m["id"] for m in control.modes()] == [0, 1, 2, 3]


def test_nvpmodel_absent_is_a_clear_error(tmp_path, monkeypatch, no_tools):
    _tree(tmp_path, monkeypatch, "orin_nano")
    control = power_modes.PowerModeController()
    assert not control.available()
    with pytest.raises(power_modes.PowerModeError, match="not on PATH"):
        control.set_mode(0)


@pytest.mark.parametrize("board", ["agx_orin", "xavier"])
def test_captured_tree_replays_the_same_facts(tmp_path, monkeypatch, no_tools, board, capsys):
    from m2f_edge.bench import cli

    _tree(tmp_path, monkeypatch, board)
    original = jetson.collect()
    copy = tmp_path / "capture"
    assert cli.main(["--capture-sysroot", str(copy)]) == 0
    assert "replay with M2F_SYSROOT=" in capsys.readouterr().out
    links = [os.path.join(d, n) for d, dirs, files in os.walk(str(copy)) for n in dirs + files
             if os.path.islink(os.path.join(d, n))]
    assert links == []  # plain files only: the copy replays anywhere
    assert "nvpmodel -q" in (copy / "m2f_commands.txt").read_text()
    monkeypatch.setenv("M2F_SYSROOT", str(copy))
    replayed = jetson.collect()
    for key, entry in original.items():
        if isinstance(entry, dict):
            assert replayed[key]["value"] == entry["value"], key
        else:
            assert replayed[key] == entry, key


def test_short_window_power_is_interpolated_from_neighbouring_samples():
    samples = [(0.0, {"watts": 10.0}), (1.0, {"watts": 20.0})]  # window between two samples
    summary = sampler.summarize(samples, 0.25, 0.75, frames=5)
    assert summary["samples"] == 0
    assert summary["avg_w"] == pytest.approx(15.0)  # 12.5 W at 0.25 s, 17.5 W at 0.75 s
    assert summary["energy_j"] == pytest.approx(7.5) and summary["j_per_frame"] == pytest.approx(1.5)
    assert summary["max_w"] == pytest.approx(17.5)
    clamped = sampler.summarize([(0.0, {"watts": 8.0})], 2.0, 3.0, frames=1)
    assert clamped["avg_w"] == pytest.approx(8.0)
    assert sampler.summarize([(0.0, {"watts": None})], 0.0, 1.0, frames=1)["avg_w"] is None
