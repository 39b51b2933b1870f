"""``m2f-edge-bench``: end-to-end speed, latency and energy of the pipeline, per power mode and batch."""

from .runner import BenchConfig, latency_stats, run_latency, run_throughput

__all__ = ["BenchConfig", "latency_stats", "run_latency", "run_throughput"]
