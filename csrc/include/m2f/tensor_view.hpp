// Plain, non-owning views of tensors: what the core takes instead of Python or numpy objects.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace m2f {

enum class DType : int { uint8 = 0, float16 = 1, float32 = 2, int32 = 3, int64 = 4, boolean = 5 };
enum class Device : int { cpu = 0, cuda = 1 };

inline std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::uint8: return 1;
    case DType::boolean: return 1;
    case DType::float16: return 2;
    case DType::float32: return 4;
    case DType::int32: return 4;
    case DType::int64: return 8;
  }
  return 0;
}

inline const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::uint8: return "uint8";
    case DType::boolean: return "bool";
    case DType::float16: return "float16";
    case DType::float32: return "float32";
    case DType::int32: return "int32";
    case DType::int64: return "int64";
  }
  return "unknown";
}

constexpr int kMaxDims = 6;

// Strides are in bytes and may be negative (numpy views such as a[::-1]).
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::uint8;
  Device device = Device::cpu;
  int device_id = 0;
  int ndim = 0;
  std::array<std::int64_t, kMaxDims> shape{};
  std::array<std::int64_t, kMaxDims> strides{};

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  bool is_contiguous() const {
    std::int64_t expected = static_cast<std::int64_t>(dtype_size(dtype));
    for (int i = ndim - 1; i >= 0; --i) {
      if (shape[i] != 1 && strides[i] != expected) return false;
      expected *= shape[i];
    }
    return true;
  }
  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
  // Address of an element by byte offsets; the caller knows the dtype.
  template <typename T>
  T* at_bytes(std::int64_t byte_offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(data) + byte_offset);
  }
};

inline TensorView make_view(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                            Device device = Device::cpu, int device_id = 0) {
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.device = device;
  v.device_id = device_id;
  v.ndim = static_cast<int>(shape.size());
  if (v.ndim > kMaxDims) throw std::invalid_argument("make_view: too many dimensions");
  int i = 0;
  for (auto s : shape) v.shape[i++] = s;
  std::int64_t stride = static_cast<std::int64_t>(dtype_size(dtype));
  for (int d = v.ndim - 1; d >= 0; --d) {
    v.strides[d] = stride;
    stride *= v.shape[d];
  }
  return v;
}

}  // namespace m2f
