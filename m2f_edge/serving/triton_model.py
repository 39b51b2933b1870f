"""The Triton Python-backend model that serves a Segmenter (loaded by the repository's model.py).

Each model instance (a Python-backend stub process) owns one Segmenter. A batch of requests from Triton's
dynamic batcher becomes one Segmenter.run_batch call per group of requests that share their score
threshold and instance limit; a request whose frames the Segmenter refuses gets its own error response
and the other requests of the batch are answered normally.

Model-config parameters read here: "m2f_edge.model" (path), "m2f_edge.options" (JSON: Segmenter keyword
arguments), INFO_PARAMETER (JSON written by the repository; defaults for the request parameters).
"""

from __future__ import annotations

import json
from typing import Dict, List

import triton_python_backend_utils as pb_utils  # provided by the Python backend's stub

from .protocol import INFO_PARAMETER, INPUT_NAME, RequestOptions, encode_results


def _parameter(config: dict, key: str, default: str = "") -> str:
    entry = config.get("parameters", {}).get(key)
    return entry["string_value"] if entry else default


class TritonPythonModel:
    def initialize(self, args):
        from .. import _core
        from ..segmenter import Segmenter

        config = json.loads(args["model_config"])
        self._rle_encode = _core.rle_encode
        options = json.loads(_parameter(config, "m2f_edge.options", "{}"))
        self.segmenter = Segmenter(_parameter(config, "m2f_edge.model"), **options)
        info = json.loads(_parameter(config, INFO_PARAMETER, "{}"))
        self._default_threshold = float(info.get("score_threshold", self.segmenter.score_threshold))
        self._default_max_instances = int(info.get("max_instances", self.segmenter.max_instances))

    def execute(self, requests):
        responses = [None] * len(requests)  # type: List
        groups = {}  # type: Dict[tuple, List[int]]
        work = []
        for i, request in enumerate(requests):
            try:
                frames = pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy()
                options = RequestOptions(json.loads(request.parameters() or "{}"), self._default_threshold,
                                         self._default_max_instances)
            except ValueError as exc:
                responses[i] = _error(exc)
                work.append(None)
                continue
            # an RGB frame is read as BGR through a reversed-channel view (no copy)
            views = [f[:, :, ::-1] if options.color == "rgb" else f for f in frames]
            work.append((views, options))
            groups.setdefault(options.run_settings(), []).append(i)
        for settings, members in groups.items():
            self._run_group(settings, members, work, responses)
        return responses

    def _run_group(self, settings, members, work, responses) -> None:
        seg = self.segmenter
        seg.score_threshold, seg.max_instances = settings
        frames = [frame for i in members for frame in work[i][0]]
        try:
            results = seg.run_batch(frames)
        except (ValueError, TypeError) as exc:
            if len(members) > 1:  # find the request at fault: each alone
                for i in members:
                    self._run_group(settings, [i], work, responses)
                return
            responses[members[0]] = _error(exc)
            return
        start = 0
        for i in members:
            views, options = work[i]
            mine = results[start:start + len(views)]
            start += len(views)
            arrays = encode_results(mine, options.masks, self._rle_encode)
            tensors = [pb_utils.Tensor(name, array) for name, array in arrays.items()]
            responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self):
        self.segmenter.close()


def _error(exc: BaseException):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError("{}: {}".format(
        type(exc).__name__, exc)))

