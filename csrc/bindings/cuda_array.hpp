// GPU arrays at the Python boundary (CUDA builds only): the owning DeviceArray, and views of
// foreign GPU arrays (CuPy, PyTorch, jetson-utils cudaImage, anything with
// __cuda_array_interface__ or __dlpack__) taken without a copy.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bindings/array_view.hpp"
#include "m2f/cuda/buffers.hpp"
#include "m2f/cuda/ops.hpp"
#include "m2f/tensor_view.hpp"

namespace m2f::bind {
namespace py = pybind11;

// Device memory, or on an integrated GPU mapped host memory (the CPU writes it through .numpy(),
// the GPU reads the same bytes: no cudaMemcpy).
class DeviceArray {
 public:
  DeviceArray(std::vector<std::int64_t> shape, DType dtype, bool mapped);
  TensorView view() const;
  const std::vector<std::int64_t>& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  bool mapped() const { return mapped_; }
  int device() const { return device_; }
  std::size_t nbytes() const;
  void* device_pointer() const { return mapped_ ? mapped_buffer_.device() : device_buffer_.data(); }
  void* host_pointer() const { return mapped_ ? mapped_buffer_.host() : nullptr; }

 private:
  std::vector<std::int64_t> shape_;
  DType dtype_;
  bool mapped_;
  int device_;  // the device current at allocation: device memory is usable there only
  cuda::DeviceBuffer device_buffer_;
  cuda::MappedBuffer mapped_buffer_;
};

// Keeps a borrowed GPU array alive (and, for DLPack, calls its deleter) while the view is used.
struct BorrowedView {
  TensorView view;
  std::shared_ptr<void> keep_alive;
  bool from_dlpack = false;
  bool copied_from_host = false;  // a temporary device copy of a numpy array
};

bool is_gpu_array(const py::handle& obj);
// The stream objects the GPU functions accept, as m2f_edge.gpu.stream_handle reads them (m2f_edge,
// CuPy, PyTorch and cuda-python streams, or an int); None is the legacy stream.
cudaStream_t stream_from(const py::object& stream);

// A view of a GPU array with no copy. Makes `stream` wait for the producer's stream where the
// producer names one (CUDA array interface v3 "stream"; DLPack's __dlpack__(stream=...)).
BorrowedView gpu_view_of(const py::handle& obj, const char* arg, cudaStream_t stream);

py::dict cuda_array_interface(const DeviceArray& array);

// The result dict of a GPU post-processing call: the CPU functions' keys (crops, crop_offsets,
// boxes, ...; each mask cropped to its box, only the crops cross to the host). masks_to:
//   "host"   crops (total,) uint8 numpy: one device-to-host copy of the kept crops only;
//   "packed" crops_packed (ceil(total / 8),) uint8 numpy as numpy.packbits(crops): 8x fewer bytes
//            cross to the host (np.unpackbits(crops_packed, count=crop_offsets[-1]) restores them);
//   "device" crops as a DeviceArray (total,) uint8 that stays on the GPU (a device-side copy).
// Every form is a fresh buffer: the next frame cannot overwrite it. Waits for `stream`.
py::dict results_to_python(cuda::PostprocessWorkspace& workspace, cudaStream_t stream, const std::string& masks_to);
void check_masks_to(const std::string& masks_to);
std::string typestr_of(DType dtype);

}  // namespace m2f::bind
