// The Python form of post-processing results, shared by the CPU and GPU bindings: a dict of crops,
// crop_offsets, scores, labels, boxes, areas and query_indices (see _core.postprocess_deployable).
#pragma once

#include <pybind11/pybind11.h>

#include "m2f/postprocess.hpp"

namespace m2f::bind {

// The crops move into numpy without a copy.
pybind11::dict frame_instances_to_python(FrameInstances&& result);

}  // namespace m2f::bind
