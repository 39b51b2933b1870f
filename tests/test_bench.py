"""m2f-edge-bench: statistics, the two timing modes, reports, model card, compare, power-mode sweeps
(fake nvpmodel on PATH), and the CLI end to end on the CPU with a tiny model."""

import csv
import json
import os
import sys
import threading
import time
import types

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fake_jetson  # noqa: E402
from m2f_edge.bench import cli, compare, model_card, reports  # noqa: E402
from m2f_edge.bench.frames import load_frames, parse_size, synthetic_frames  # noqa: E402
from m2f_edge.bench.runner import BenchConfig, latency_stats, run_latency, run_throughput  # noqa: E402
from m2f_edge.runners import HostRunner  # noqa: E402
from m2f_edge.telemetry import jetson  # noqa: E402


# ----------------------------------------------------------------------------- statistics
def test_latency_stats_match_numpy():
    values = [12.0, 10.0, 11.0, 30.0, 10.5, 10.2, 9.8, 10.1]
    stats = latency_stats(values)
    ref = np.asarray(values)
    assert stats["count"] == 8 and stats["min"] == 9.8 and stats["max"] == 30.0
    assert stats["mean"] == pytest.approx(ref.mean())
    for key, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        assert stats[key] == pytest.approx(np.percentile(ref, q))
    assert stats["std"] == pytest.approx(ref.std(ddof=1))
    assert stats["cv"] == pytest.approx(ref.std(ddof=1) / ref.mean())
    assert latency_stats([]) is None
    assert latency_stats([5.0])["cv"] == 0.0


# ----------------------------------------------------------------------------- fake segmenters
class FakeClock(object):
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class SteppedSegmenter(object):
    """Each stage advances a fake clock by a fixed amount: exact expected times."""

    def __init__(self, clock, pre=0.002, infer=0.005, post=0.003, timings=None):
        self.clock, self.pre, self.infer_s, self.post = clock, pre, infer, post
        self.calls = {"pre": 0, "infer": 0, "post": 0}
        self.batches = []
        self.runner = HostRunner(self)
        if timings is not None:
            self.backend = types.SimpleNamespace(name="fake", last_timings=lambda: dict(timings))

    def preprocess(self, frames):
        self.calls["pre"] += 1
        self.batches.append(len(frames))
        self.clock.now += self.pre
        return types.SimpleNamespace(tensor=np.zeros((len(frames), 3, 2, 2), np.float32),
                                     transforms=[None] * len(frames))

    def infer(self, tensor):
        self.calls["infer"] += 1
        self.clock.now += self.infer_s
        return {"out": tensor}

    def postprocess(self, outputs, transforms):
        self.calls["post"] += 1
        self.clock.now += self.post
        return [None] * len(transforms)


def test_latency_mode_exact_stage_times():
    clock = FakeClock()
    seg = SteppedSegmenter(clock)
    pool = synthetic_frames(24, 32, count=3)
    result = run_latency(seg, pool, 4, BenchConfig(warmup_s=0.0, iterations=7), clock=clock)
    assert result["iterations"] == 7 and result["frames"] == 28
    assert seg.calls["pre"] == 8  # one warm-up batch, then the 7 timed ones
    assert set(seg.batches) == {4}
    lat = result["latency_ms"]
    assert lat["preprocess"]["p50"] == pytest.approx(2.0)
    assert lat["inference"]["mean"] == pytest.approx(5.0)
    assert lat["postprocess"]["max"] == pytest.approx(3.0)
    assert lat["e2e"]["p99"] == pytest.approx(10.0)
    assert lat["enqueue"] is None and lat["gpu"] is None  # the backend does not report them
    assert result["fps"] == pytest.approx(28 / 0.070)
    assert result["cv"] == pytest.approx(0.0, abs=1e-9)


def test_warmup_by_time_and_window_by_duration():
    clock = FakeClock()
    seg = SteppedSegmenter(clock, pre=0.25, infer=0.5, post=0.25)  # binary fractions: exact sums
    pool = synthetic_frames(24, 32, count=2)
    result = run_latency(seg, pool, 1, BenchConfig(warmup_s=5.0, duration_s=10.0), clock=clock)
    # 1 s per batch: 5 warm-up batches, then batches until 10 s have passed
    assert seg.calls["pre"] - result["iterations"] == 5
    assert result["iterations"] == 10 and result["elapsed_s"] == 10.0


def test_backend_timings_are_reported_when_the_backend_has_them():
    clock = FakeClock()
    seg = SteppedSegmenter(clock, timings={"enqueue_ms": 0.25, "gpu_ms": 4.5})
    result = run_latency(seg, synthetic_frames(24, 32, 2), 2, BenchConfig(warmup_s=0, iterations=4), clock=clock)
    assert result["latency_ms"]["enqueue"]["p50"] == pytest.approx(0.25)
    assert result["latency_ms"]["gpu"]["mean"] == pytest.approx(4.5)


class SleepingSegmenter(object):
    """Real-time stages that record when they ran, to see the overlap."""

    def __init__(self, pre=0.01, infer=0.02, post=0.01, fail_at=None):
        self.delays = {"pre": pre, "infer": infer, "post": post}
        self.spans = {"pre": [], "infer": [], "post": []}
        self.fail_at = fail_at
        self.infer_calls = 0
        self.lock = threading.Lock()
        self.runner = HostRunner(self)

    def _stage(self, name):
        start = time.perf_counter()
        time.sleep(self.delays[name])
        with self.lock:
            self.spans[name].append((start, time.perf_counter()))

    def preprocess(self, frames):
        self._stage("pre")
        return types.SimpleNamespace(tensor=np.zeros((len(frames), 3, 2, 2), np.float32), transforms=[0] * len(frames))

    def infer(self, tensor):
        self.infer_calls += 1
        if self.fail_at is not None and self.infer_calls >= self.fail_at:
            raise RuntimeError("inference failed on purpose")
        self._stage("infer")
        return {"out": tensor}

    def postprocess(self, outputs, transforms):
        self._stage("post")
        return list(transforms)


def _overlaps(spans_a, spans_b):
    return any(a0 < b1 and b0 < a1 for a0, a1 in spans_a for b0, b1 in spans_b)


def test_throughput_mode_overlaps_stages():
    seg = SleepingSegmenter()
    result = run_throughput(seg, synthetic_frames(24, 32, 2), 2, BenchConfig(warmup_s=0.0, iterations=12))
    assert result["mode"] == "throughput" and result["iterations"] == 12 and result["frames"] == 24
    assert _overlaps(seg.spans["pre"], seg.spans["infer"])
    assert _overlaps(seg.spans["infer"], seg.spans["post"])
    assert result["latency_ms"]["inference"]["count"] == 12
    # e2e in the pipeline includes queueing: never shorter than the three stages back to back
    assert result["latency_ms"]["e2e"]["min"] >= 0.9 * (10 + 20 + 10)
    one_at_a_time = SleepingSegmenter()
    run_latency(one_at_a_time, synthetic_frames(24, 32, 2), 2, BenchConfig(0.0, iterations=6))
    assert not _overlaps(one_at_a_time.spans["pre"], one_at_a_time.spans["infer"])
    assert not _overlaps(one_at_a_time.spans["infer"], one_at_a_time.spans["post"])


def test_throughput_mode_propagates_a_stage_failure_without_hanging():
    seg = SleepingSegmenter(pre=0.001, infer=0.001, post=0.001, fail_at=4)
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="failed on purpose"):
        run_throughput(seg, synthetic_frames(24, 32, 2), 1, BenchConfig(warmup_s=0.0, iterations=50))
    assert time.perf_counter() - started < 20
    assert not [t for t in threading.enumerate() if t.name.startswith("m2f-bench-")]


def test_bench_config_rejects_bad_values():
    with pytest.raises(ValueError, match="iterations"):
        BenchConfig(iterations=0)
    with pytest.raises(ValueError, match="duration"):
        BenchConfig(duration_s=0)
    with pytest.raises(ValueError, match="warmup"):
        BenchConfig(warmup_s=-1)


# ----------------------------------------------------------------------------- frames
def test_frames_synthetic_and_from_disk(tmp_path):
    import cv2

    assert parse_size("1280x720") == (720, 1280)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_size("1280")
    pool = synthetic_frames(48, 64, count=3)
    assert pool.frame_size == (48, 64) and len(pool.batch(5)) == 5
    assert pool.batch(1)[0] is pool.frames[2]  # cycles through the frames in turn
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / "f{}.png".format(i)), np.full((30, 40, 3), 40 * i, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    images = load_frames(str(folder))
    assert len(images.frames) == 3 and images.frames[2][0, 0, 0] == 80
    video = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 30 * i, np.uint8))
    writer.release()
    clip = load_frames(video)
    assert len(clip.frames) == 5 and clip.frame_size == (48, 64)
    with pytest.raises(ValueError, match="does not exist"):
        load_frames(str(tmp_path / "missing.mp4"))


# ----------------------------------------------------------------------------- model card
def test_model_card_table_and_device_matching():
    card = model_card.load_card()
    table = {(e["device"], e["batch"]): e["fps"] for e in card["entries"]}
    assert table[("AGX Orin 64GB", 8)] == 17.53 and table[("Orin Nano 8GB", 8)] == 2.13
    assert table[("H100", 16)] == 251.99 and len(table) == 11
    assert card["precision"] == "FP16" and card["tool"] == "trtexec" and "inference only" in card["scope"]
    assert model_card.jetson_device_key("NVIDIA Jetson AGX Orin Developer Kit", 61.4) == "AGX Orin 64GB"
    assert model_card.jetson_device_key("NVIDIA Jetson AGX Orin Developer Kit", 29.9) == "AGX Orin 32GB"
    assert model_card.jetson_device_key("NVIDIA Jetson Orin Nano Developer Kit", 7.3) == "Orin Nano 8GB"
    assert model_card.jetson_device_key("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 15.3) == "Orin 16GB"
    assert model_card.jetson_device_key("Jetson-AGX", 31.0) is None  # Xavier: not in the card
    assert model_card.gpu_device_key("NVIDIA H100 80GB HBM3") == "H100"
    assert model_card.gpu_device_key("Tesla T4") == "T4"
    assert model_card.gpu_device_key("NVIDIA L40S") is None
    assert model_card.gpu_device_key("NVIDIA L4") == "L4"
    assert model_card.gpu_device_key("NVIDIA RTX A2000") is None
    assert model_card.gpu_device_key("NVIDIA GeForce RTX 4090") == "RTX 4090"
    entry = model_card.card_entry("AGX Orin 64GB", 8)
    assert entry["fps"] == 17.53 and entry["precision"] == "FP16"
    assert model_card.card_entry("AGX Orin 64GB", 1) is None


# ----------------------------------------------------------------------------- CLI end to end
@pytest.fixture
def plain_host(tmp_path, monkeypatch):
    """Not a Jetson, no NVML, no jtop: power is n/a."""
    empty = tmp_path / "sysroot"
    empty.mkdir()
    monkeypatch.setenv("M2F_SYSROOT", str(empty))
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setitem(sys.modules, "jtop", None)
    return empty


def _run_cli(argv, capsys):
    rc = cli.main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_cli_end_to_end_on_cpu_with_tiny_model(tiny_model, tmp_path, plain_host, capsys):
    import jsonschema

    model = tiny_model("deployable", height=64, width=96)
    out = {ext: str(tmp_path / ("run." + ext)) for ext in ("json", "csv", "md")}
    rc, stdout, stderr = _run_cli(["--model", model, "--batch", "1,2", "--input-size", "160x120", "--warmup", "0.05",
                                   "--iterations", "6", "--json", out["json"], "--csv", out["csv"],
                                   "--markdown", out["md"]], capsys)
    assert rc == 0, stderr
    document = json.load(open(out["json"]))
    jsonschema.validate(document, reports.load_schema())
    assert document["model"]["contract"] == "deployable"
    assert document["model"]["backend"] == "onnxruntime" and document["model"]["input_size"] == [64, 96]
    assert document["config"]["frame_size"] == [120, 160] and document["config"]["batches"] == [1, 2]
    assert document["platform"]["jetson"] is None and document["device_key"] is None
    results = document["runs"][0]["results"]
    assert [(r["mode"], r["batch"]) for r in results] == [("latency", 1), ("throughput", 1), ("latency", 2),
                                                          ("throughput", 2)]
    for result in results:
        assert result["iterations"] == 6 and result["frames"] == 6 * result["batch"]
        assert result["fps"] == pytest.approx(result["frames"] / result["elapsed_s"])
        lat = result["latency_ms"]
        assert lat["e2e"]["count"] == 6 and lat["enqueue"] is None and lat["gpu"] is None
        assert lat["e2e"]["min"] <= lat["e2e"]["p50"] <= lat["e2e"]["p90"] <= lat["e2e"]["p99"] <= lat["e2e"]["max"]
        if result["mode"] == "latency":  # stages back to back: e2e is their sum
            assert lat["e2e"]["mean"] == pytest.approx(
                lat["preprocess"]["mean"] + lat["inference"]["mean"] + lat["postprocess"]["mean"], rel=0.05)
        assert result["power"] is None and result["fps_per_w"] is None
    assert any("no power reading" in w for w in document["warnings"])
    # the terminal table, CSV and Markdown carry the same numbers
    assert "throughput" in stdout and "n/a" in stdout and "FPS" in stdout
    fps_cell = "{:.2f}".format(results[0]["fps"])
    assert fps_cell in stdout
    rows = list(csv.DictReader(open(out["csv"])))
    assert len(rows) == 4 and rows[0]["mode"] == "latency" and rows[0]["batch"] == "1"
    assert float(rows[3]["fps"]) == pytest.approx(results[3]["fps"])
    assert float(rows[0]["e2e_p99_ms"]) == pytest.approx(results[0]["latency_ms"]["e2e"]["p99"])
    assert rows[0]["onnxruntime"] == document["platform"]["host"]["onnxruntime"]["value"]["version"]
    markdown = open(out["md"]).read()
    assert "| latency | 1 | {} |".format(fps_cell) in markdown and "host.python" in markdown


def test_cli_on_fake_orin_nano_reports_power_and_the_model_card(tiny_model, tmp_path, monkeypatch, capsys):
    import jsonschema

    root = tmp_path / "root"
    expected = fake_jetson.build_tree(root, "orin_nano")
    bin_dir = tmp_path / "bin"
    fake_jetson.install_fake_tools(root, "orin_nano", bin_dir)
    monkeypatch.setenv("M2F_SYSROOT", str(root))
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    monkeypatch.setitem(sys.modules, "jtop", None)
    model = tiny_model("deployable", height=64, width=96)
    json_path = str(tmp_path / "nano.json")
    rc, stdout, stderr = _run_cli(["--model", model, "--batch", "8", "--input-size", "96x64", "--warmup", "0",
                                   "--duration", "0.3", "--mode", "latency", "--sample-period", "0.02",
                                   "--json", json_path], capsys)
    assert rc == 0, stderr
    document = json.load(open(json_path))
    jsonschema.validate(document, reports.load_schema())
    assert document["device_key"] == "Orin Nano 8GB"
    assert document["platform"]["jetson"]["l4t"]["value"] == "36.3.0"
    run = document["runs"][0]
    assert run["power_mode"] == {"id": 0, "name": "15W"} and run["jetson_clocks"] is False
    assert any("clocks are not locked" in w for w in run["warnings"])
    result = run["results"][0]
    assert result["power"]["avg_w"] == pytest.approx(expected["total_w"])
    assert result["power"]["j_per_frame"] == pytest.approx(expected["total_w"] * result["elapsed_s"] / result["frames"])
    assert result["fps_per_w"] == pytest.approx(result["fps"] / expected["total_w"])
    assert result["model_card"]["fps"] == 2.13 and result["model_card"]["batch"] == 8
    assert "2.13" in stdout and "inference only" in stdout and "not the same measurement" in stdout
    assert "WARNING: clocks are not locked" in stdout


# ----------------------------------------------------------------------------- power-mode sweeps
@pytest.fixture
def fake_orin(tmp_path, monkeypatch):
    root = tmp_path / "root"
    fake_jetson.build_tree(root, "agx_orin", power_mode=2, clocks_locked=True)
    bin_dir = tmp_path / "bin"
    log = fake_jetson.install_fake_tools(root, "agx_orin", bin_dir, fail_set=[1], reboot_modes=[3])
    monkeypatch.setenv("M2F_SYSROOT", str(root))
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    monkeypatch.setitem(sys.modules, "jtop", None)
    return root, log


def _assert_restored(root, log):
    calls = fake_jetson.read_calls(log)
    # the last commands put the original mode back, then the stored clocks
    assert calls[-1].startswith("jetson_clocks --restore")
    assert [c for c in calls if c.startswith("nvpmodel -m")][-1] == "nvpmodel -m 2"
    assert jetson.current_power_mode()["value"] == {"id": 2, "name": "MODE_30W"}
    assert fake_jetson.clocks_locked_state(root)
    return calls


def test_power_mode_sweep_all(tiny_model, tmp_path, fake_orin, capsys):
    import jsonschema

    root, log = fake_orin
    model = tiny_model("deployable", height=64, width=96)
    json_path = str(tmp_path / "sweep.json")
    plot_path = str(tmp_path / "sweep.png")
    rc, stdout, stderr = _run_cli(["--model", model, "--power-modes", "all", "--lock-clocks", "--settle", "0",
                                   "--input-size", "96x64", "--warmup", "0", "--iterations", "3",
                                   "--sample-period", "0.02", "--json", json_path] +
                                  (["--plot", plot_path] if _has_matplotlib() else []), capsys)
    assert rc == 0, stderr
    document = json.load(open(json_path))
    jsonschema.validate(document, reports.load_schema())
    assert [run["power_mode"]["id"] for run in document["runs"]] == [0, 2]
    assert all(run["jetson_clocks"] is True for run in document["runs"])  # --lock-clocks in each mode
    skipped = {s["id"]: s["reason"] for s in document["skipped_power_modes"]}
    assert set(skipped) == {1, 3} and "reboot" in skipped[3]
    assert document["device_key"] == "AGX Orin 64GB"
    assert document["runs"][0]["results"][0]["power"]["total_source"].startswith("sum of rails")
    calls = _assert_restored(root, log)
    assert calls.index("nvpmodel -m 0") < calls.index("nvpmodel -m 1") < calls.index("nvpmodel -m 3")
    assert "MODE_30W (2)" in stdout and "MAXN (0)" in stdout and "skipped power mode 3" in stdout
    if _has_matplotlib():
        assert open(plot_path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


class _FailingSecondMode(SleepingSegmenter):
    """Works in the first power mode, then fails (or is interrupted) in the second."""

    def __init__(self, error):
        SleepingSegmenter.__init__(self, pre=0.0, infer=0.0, post=0.0)
        self.error = error
        self.input_size = (64, 96)
        self.contract = "deployable"
        self.batch_range = (1, None)
        self.backend = types.SimpleNamespace(name="fake")

    def infer(self, tensor):
        if jetson.current_power_mode()["value"]["id"] == 2:
            raise self.error
        return SleepingSegmenter.infer(self, tensor)


@pytest.mark.parametrize("error, code", [(RuntimeError("engine lost"), 1), (KeyboardInterrupt(), 130)])
def test_power_mode_restored_when_the_run_fails(tmp_path, fake_orin, monkeypatch, capsys, error, code):
    root, log = fake_orin
    model = tmp_path / "m.onnx"
    model.write_bytes(b"unused")
    monkeypatch.setattr(cli, "make_segmenter", lambda args: _FailingSecondMode(error))
    # 0 first (works), then 2 -- in mode 2 the run fails; the original mode 2 and locked clocks come back
    rc, stdout, stderr = _run_cli(["--model", str(model), "--power-modes", "0,2", "--settle", "0",
                                   "--input-size", "96x64", "--warmup", "0", "--iterations", "2"], capsys)
    assert rc == code
    assert ("engine lost" in stderr) if code == 1 else ("interrupted" in stderr)
    calls = _assert_restored(root, log)
    assert calls.count("nvpmodel -m 0") == 1 and calls.count("nvpmodel -m 2") == 2
    assert sum(1 for c in calls if c.startswith("jetson_clocks --store")) == 1


def test_cli_usage_errors(tiny_model, plain_host, capsys, tmp_path):
    model = tiny_model("deployable", height=64, width=96)
    rc, _, err = _run_cli(["--model", model, "--batch", "0,x"], capsys)
    assert rc == 2 and "--batch" in err
    rc, _, err = _run_cli(["--model", model, "--power-modes", "all"], capsys)
    assert rc == 2 and "nvpmodel" in err and "Jetson" in err
    rc, _, err = _run_cli(["--model", str(tmp_path / "nope.onnx"), "--iterations", "1"], capsys)
    assert rc == 2 and "does not exist" in err
    rc, _, err = _run_cli(["--model", model, "--input-size", "big"], capsys)
    assert rc == 2 and "WIDTHxHEIGHT" in err
    with pytest.raises(SystemExit):
        cli.main([])


def test_batch_outside_model_range_is_skipped(tiny_model, tmp_path, plain_host, capsys):
    model = tiny_model("deployable", height=64, width=96, batch=1)  # fixed batch 1
    json_path = str(tmp_path / "fixed.json")
    rc, stdout, stderr = _run_cli(["--model", model, "--batch", "1,4", "--input-size", "96x64", "--warmup", "0",
                                   "--iterations", "2", "--mode", "latency", "--json", json_path], capsys)
    assert rc == 0, stderr
    run = json.load(open(json_path))["runs"][0]
    assert [r["batch"] for r in run["results"]] == [1]
    assert run["skipped_batches"][0]["batch"] == 4 and "1..1" in run["skipped_batches"][0]["reason"]
    assert "skipped batch 4" in stdout


# ----------------------------------------------------------------------------- compare, plot
def _doc_with(fps_by_key, watts=None):
    results = []
    for (mode, batch), fps in fps_by_key.items():
        stats = latency_stats([1000.0 * batch / fps])
        power = None
        if watts is not None:
            power = {"source": "x", "total_source": "x", "samples": 3, "avg_w": watts, "energy_j": watts,
                     "j_per_frame": watts / fps, "max_w": watts,
                     "throttling": {"detected": False, "reasons": [], "note": None}}
        results.append({"mode": mode, "batch": batch, "iterations": 1, "frames": batch, "elapsed_s": batch / fps,
                        "fps": fps, "latency_ms": {"e2e": stats, "preprocess": stats, "inference": stats,
                                                   "postprocess": stats, "enqueue": None, "gpu": None},
                        "cv": 0.0, "cv_of": "x", "power": power,
                        "fps_per_w": None if watts is None else fps / watts, "model_card": None, "warnings": []})
    return {"tool": "m2f-edge-bench", "device_key": None, "m2f_edge_version": "0.1.0",
            "model": {"path": "m.onnx", "backend": "onnxruntime"}, "config": {"frames": "synthetic"},
            "platform": {"host": {"cpu_model": {"value": "cpu", "source": "t"}}},
            "runs": [{"power_mode": {"id": 0, "name": "MAXN"}, "results": results}]}


def test_compare_prints_ratios(tmp_path, capsys):
    a = _doc_with({("latency", 1): 10.0, ("throughput", 8): 40.0}, watts=20.0)
    b = _doc_with({("latency", 1): 15.0, ("throughput", 8): 30.0, ("latency", 16): 50.0}, watts=10.0)
    comparison = compare.compare(a, b)
    rows = {(r["mode"], r["batch"]): r for r in comparison["rows"]}
    assert rows[("latency", 1)]["fps"] == pytest.approx(1.5)
    assert rows[("latency", 1)]["e2e_p50"] == pytest.approx(10.0 / 15.0)
    assert rows[("throughput", 8)]["fps"] == pytest.approx(0.75)
    assert rows[("throughput", 8)]["fps_per_w"] == pytest.approx((30.0 / 10.0) / (40.0 / 20.0))
    assert rows[("latency", 1)]["j_per_frame"] == pytest.approx((10.0 / 15.0) / (20.0 / 10.0))
    assert comparison["only_b"] == [str(("MAXN", "latency", 16))]
    paths = []
    for name, doc in (("a.json", a), ("b.json", b)):
        paths.append(str(tmp_path / name))
        json.dump(doc, open(paths[-1], "w"))
    rc = cli.main(["--compare"] + paths)
    out = capsys.readouterr().out
    assert rc == 0 and "1.500" in out and "0.750" in out and "only in B" in out
    json.dump({"hello": 1}, open(paths[0], "w"))
    assert cli.main(["--compare"] + paths) == 1
    assert "not an m2f-edge-bench JSON" in capsys.readouterr().err


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, tmp_path, tiny_model, plain_host, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(RuntimeError, match=r"m2f-edge\[plot\]"):
        reports.write_plot(_doc_with({("latency", 1): 10.0}), str(tmp_path / "p.png"))
    # the CLI says so before measuring anything
    rc, stdout, stderr = _run_cli(["--model", tiny_model("deployable", height=64, width=96), "--plot",
                                   str(tmp_path / "p.png"), "--duration", "60"], capsys)
    assert rc == 2 and "m2f-edge[plot]" in stderr and stdout == ""


def test_plot_written_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    path = str(tmp_path / "p.png")
    doc = _doc_with({("latency", 1): 10.0, ("latency", 8): 30.0}, watts=12.0)
    doc["model_card"] = model_card.card_entry("AGX Orin 64GB", 8)
    reports.write_plot(doc, path)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 5000


def test_jetson_without_power_monitor_still_samples_clocks(tiny_model, tmp_path, monkeypatch, capsys):
    import shutil

    root = tmp_path / "root"
    fake_jetson.build_tree(root, "orin_nano")
    shutil.rmtree(str(root / "sys/class/hwmon"))
    shutil.rmtree(str(root / "sys/bus/i2c"))
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("M2F_SYSROOT", str(root))
    monkeypatch.setenv("PATH", str(empty) + os.pathsep + os.environ["PATH"])
    monkeypatch.setitem(sys.modules, "jtop", None)
    json_path = str(tmp_path / "nopower.json")
    rc, stdout, stderr = _run_cli(["--model", tiny_model("deployable", height=64, width=96), "--input-size", "96x64",
                                   "--warmup", "0", "--duration", "0.3", "--mode", "latency", "--sample-period",
                                   "0.02", "--json", json_path], capsys)
    assert rc == 0, stderr
    document = json.load(open(json_path))
    power = document["runs"][0]["results"][0]["power"]
    assert power["avg_w"] is None and power["j_per_frame"] is None and power["samples"] >= 3
    assert power["throttling"]["detected"] is False and power["throttling"]["note"] is None
    assert document["runs"][0]["results"][0]["fps_per_w"] is None
    assert any("no power reading" in w and "INA3221" in w for w in document["warnings"])
    assert any("jetson-stats is not installed" in n for n in document["platform"]["notes"])


def test_sigterm_during_a_sweep_restores_the_power_mode(tiny_model, tmp_path, fake_orin):
    import signal
    import subprocess

    root, log = fake_orin
    from subprocess_env import SUBPROCESS_CWD, subprocess_env

    env = subprocess_env()
    process = subprocess.Popen(
        [sys.executable, "-m", "m2f_edge.bench", "--model", tiny_model("deployable", height=64, width=96),
         "--power-modes", "0", "--settle", "0", "--input-size", "96x64", "--warmup", "0", "--duration", "60"],
        env=env, cwd=SUBPROCESS_CWD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    try:
        deadline = time.time() + 60
        while "nvpmodel -m 0" not in fake_jetson.read_calls(log) and time.time() < deadline:
            time.sleep(0.1)
        assert "nvpmodel -m 0" in fake_jetson.read_calls(log), process.communicate(timeout=5)
        time.sleep(1.0)  # measuring in mode 0 now
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "interrupted (power mode and clocks restored)" in err
    _assert_restored(root, log)


def test_ctrl_c_in_throughput_mode_ends_the_stage_threads():
    class InterruptedPost(SleepingSegmenter):
        def postprocess(self, outputs, transforms):
            if len(self.spans["post"]) >= 2:
                raise KeyboardInterrupt
            return SleepingSegmenter.postprocess(self, outputs, transforms)

    seg = InterruptedPost(pre=0.001, infer=0.001, post=0.001)
    with pytest.raises(KeyboardInterrupt):
        run_throughput(seg, synthetic_frames(24, 32, 2), 1, BenchConfig(warmup_s=0.0, iterations=500, queue_depth=1))
    assert not [t for t in threading.enumerate() if t.name.startswith("m2f-bench-") and t.is_alive()]


# ----------------------------------------------------------------------------- benchmarks/bench_stream.py
def test_bench_stream_simulate_runs_its_sleeping_runner_through_the_stream(capsys, monkeypatch):
    """The --simulate mode plugs a runner whose stages only sleep into a real Segmenter; the stream cannot
    beat its slowest stage, so the ratio it prints is at most 1 (plus clock noise). Run in this process:
    the script imports the m2f_edge this test imported (a subprocess from the checkout would find the
    unbuilt source folder first when the package is installed)."""
    import re

    from repo_scripts import load_script

    pytest.importorskip("cv2")
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts the checkout first on it
    bench_stream = load_script("benchmarks/bench_stream.py")
    assert bench_stream.main(["--simulate", "2,6,3", "--frames", "24", "--repeat", "1", "--size", "160x96",
                              "--net", "64x96"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"stage infer\s+166\.7 frames/s\s+<- slowest", printed), printed
    ratio = float(re.search(r"stream / slowest stage = ([0-9.]+)", printed).group(1))
    assert 0.0 < ratio <= 1.05, printed
