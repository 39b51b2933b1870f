"""The device pipeline's CPU twin: ``GpuPipeline``'s interface (stage, run_staged, apply_settings,
last_timings) made of the core's CPU stages and the Segmenter's backend.

The device runner drives either. With the twin it runs on any machine: ``m2f-edge verify`` uses it where
no GPU is found, and the tests use it to check the device runner's own logic (staging slots, padding,
settings handed to the pipeline only through ``apply_settings``) without a GPU. It holds its own copy of
the settings, as the C++ pipeline does, so a setting the runner forgets to hand over shows up as a
difference from the host runner.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .segmenter import Segmenter


class CpuTwinPipeline:
    """Made like GpuPipeline: ``CpuTwinPipeline(backend, contract, output_map=..., resize=..., ...)``."""

    def __init__(self, backend, contract: str, *, output_map: Optional[Dict[str, str]] = None, **settings):
        # a Segmenter on the same backend with the runner's settings: the core's CPU stages, nothing copied
        self._stages = Segmenter(backend, runner="host", **settings)
        if self._stages.contract != contract:
            raise ValueError("contract: the backend's outputs give {!r}, not {!r}".format(
                self._stages.contract, contract))
        if output_map and dict(output_map) != dict(self._stages._output_names):
            raise ValueError("output_map: {} differs from the backend's {}".format(
                dict(output_map), dict(self._stages._output_names)))
        self.settings = dict(settings)
        self.runs = 0

    def stage(self, frames: Sequence[Any], slot: Optional[int] = None) -> List[np.ndarray]:
        """A copy of each frame, as the GPU pipeline's staging copies it into pinned memory."""
        staged = []
        for i, frame in enumerate(frames):
            if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim not in (2, 3):
                raise ValueError("frames[{}]: expected an (H, W, C) uint8 array, got {}".format(
                    i, getattr(frame, "dtype", type(frame).__name__)))
            staged.append(np.array(frame, copy=True))
        return staged

    def run_staged(self, staged: Sequence[np.ndarray], masks_to: str = "host") -> List[Dict[str, Any]]:
        if masks_to != "host":
            raise ValueError("masks_to: the CPU twin keeps masks on the host, got {!r}".format(masks_to))
        prepared = self._stages.preprocess(list(staged))
        self.runs += 1
        return self._stages.postprocess_records(self._stages.infer(prepared.tensor), prepared.transforms)

    def apply_settings(self, **settings) -> None:
        for name, value in settings.items():
            if name not in self.settings:
                raise TypeError("apply_settings: unknown setting {!r}".format(name))
            setattr(self._stages, name, value)
            self.settings[name] = value

    def last_timings(self) -> Dict[str, Any]:
        return {"cpu_twin": True}
