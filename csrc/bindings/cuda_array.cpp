#ifdef M2F_WITH_CUDA
#include "bindings/cuda_array.hpp"
#include "bindings/frame_instances.hpp"

#include <cuda_runtime_api.h>

namespace m2f::bind {
namespace {

// DLPack's C ABI (dlpack.h, stable since v0.2): only the fields read here.
struct DLDevice {
  std::int32_t device_type;
  std::int32_t device_id;
};
struct DLDataType {
  std::uint8_t code;
  std::uint8_t bits;
  std::uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  std::int32_t ndim;
  DLDataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;  // in elements; null = C-contiguous
  std::uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
constexpr std::int32_t kDLCUDA = 2, kDLCUDAHost = 3, kDLCUDAManaged = 13;

DType dtype_from_typestr(const std::string& typestr, const char* arg) {
  // The byte-order character is '<', '|' or '='; every CUDA host is little-endian, so '>' (big-endian)
  // data would be read wrongly: refused below with the typestr in the message.
  if (typestr.size() < 2 || typestr[0] == '>')
    throw py::type_error(std::string("argument '") + arg + "': unsupported GPU array type '" + typestr + "'");
  std::string t = typestr.substr(1);
  if (t == "u1") return DType::uint8;
  if (t == "b1") return DType::boolean;
  if (t == "f2") return DType::float16;
  if (t == "f4") return DType::float32;
  if (t == "i4") return DType::int32;
  if (t == "i8") return DType::int64;
  throw py::type_error(std::string("argument '") + arg + "': unsupported GPU array type '" + typestr + "'");
}

DType dtype_from_dlpack(const DLDataType& t, const char* arg) {
  if (t.lanes == 1) {
    if (t.code == 1 && t.bits == 8) return DType::uint8;
    if (t.code == 6 && t.bits == 8) return DType::boolean;
    if (t.code == 2 && t.bits == 16) return DType::float16;
    if (t.code == 2 && t.bits == 32) return DType::float32;
    if (t.code == 0 && t.bits == 32) return DType::int32;
    if (t.code == 0 && t.bits == 64) return DType::int64;
  }
  throw py::type_error(std::string("argument '") + arg + "': unsupported DLPack type (code " +
                       std::to_string(t.code) + ", bits " + std::to_string(t.bits) + ")");
}

void fill_contiguous_strides(TensorView& v) {
  std::int64_t stride = static_cast<std::int64_t>(dtype_size(v.dtype));
  for (int d = v.ndim - 1; d >= 0; --d) {
    v.strides[d] = stride;
    stride *= v.shape[d];
  }
}

int current_device() {
  int device = 0;
  M2F_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

std::string device_mismatch(const char* arg, int device, int current) {
  return std::string("argument '") + arg + "': the array is on CUDA device " + std::to_string(device) +
         " but the current device is " + std::to_string(current) + " (call cudaSetDevice / torch.cuda.set_device first)";
}

// The kernels run on the current device: memory of another device (without peer access) or plain
// host memory would fault there. cudaPointerGetAttributes says where a CUDA array interface pointer lives.
void check_pointer_usable(const void* data, const char* arg) {
  if (data == nullptr) return;  // an empty array
  cudaPointerAttributes attributes{};
  const cudaError_t status = cudaPointerGetAttributes(&attributes, data);
  if (status != cudaSuccess) {  // not ours to judge (e.g. another context): let the kernel try
    cudaGetLastError();
    return;
  }
  if (attributes.type == cudaMemoryTypeUnregistered)
    throw py::value_error(std::string("argument '") + arg +
                          "': the __cuda_array_interface__ pointer is not CUDA memory (plain host memory?)");
  const int current = current_device();
  if (attributes.type == cudaMemoryTypeDevice && attributes.device != current)
    throw py::value_error(device_mismatch(arg, attributes.device, current));
}

// Kernels load elements with their natural alignment: a misaligned float or int64 would be a
// cudaErrorMisalignedAddress, which is sticky (every later CUDA call of the process fails).
void check_aligned(const TensorView& v, const char* arg) {
  const auto size = static_cast<std::int64_t>(dtype_size(v.dtype));
  bool aligned = reinterpret_cast<std::uintptr_t>(v.data) % static_cast<std::uintptr_t>(size) == 0;
  for (int i = 0; i < v.ndim; ++i) aligned = aligned && (v.shape[i] <= 1 || v.strides[i] % size == 0);
  if (!aligned)
    throw py::value_error(std::string("argument '") + arg + "': the GPU array's address or strides are not multiples of " +
                          std::to_string(size) + " bytes (its element size)");
}

// The producer's stream must finish writing before our kernels read.
void wait_for_stream(cudaStream_t producer, cudaStream_t consumer) {
  if (producer == consumer) return;
  auto event = cuda::Event::create();
  event.record(producer);
  M2F_CUDA_CHECK(cudaStreamWaitEvent(consumer, event.get(), 0));
}

}  // namespace

DeviceArray::DeviceArray(std::vector<std::int64_t> shape, DType dtype, bool mapped)
    : shape_(std::move(shape)), dtype_(dtype), mapped_(mapped), device_(current_device()) {
  if (shape_.size() > static_cast<std::size_t>(kMaxDims))
    throw py::value_error("argument 'shape': at most " + std::to_string(kMaxDims) + " dimensions");
  for (auto s : shape_)
    if (s < 0) throw py::value_error("argument 'shape': sizes must be >= 0");
  if (mapped_)
    mapped_buffer_ = cuda::MappedBuffer(nbytes());
  else
    device_buffer_ = cuda::DeviceBuffer(nbytes());
}

std::size_t DeviceArray::nbytes() const {
  std::size_t n = dtype_size(dtype_);
  for (auto s : shape_) n *= static_cast<std::size_t>(s);
  return n;
}

TensorView DeviceArray::view() const {
  TensorView v;
  v.data = device_pointer();
  v.dtype = dtype_;
  v.device = Device::cuda;
  v.device_id = device_;
  v.ndim = static_cast<int>(shape_.size());
  for (int i = 0; i < v.ndim; ++i) v.shape[i] = shape_[static_cast<std::size_t>(i)];
  fill_contiguous_strides(v);
  return v;
}

std::string typestr_of(DType dtype) {
  switch (dtype) {
    case DType::uint8: return "|u1";
    case DType::boolean: return "|b1";
    case DType::float16: return "<f2";
    case DType::float32: return "<f4";
    case DType::int32: return "<i4";
    case DType::int64: return "<i8";
  }
  return "|u1";
}

py::dict cuda_array_interface(const DeviceArray& array) {
  py::dict d;
  py::tuple shape(array.shape().size());
  for (std::size_t i = 0; i < array.shape().size(); ++i) shape[i] = array.shape()[i];
  d["shape"] = shape;
  d["typestr"] = typestr_of(array.dtype());
  d["data"] = py::make_tuple(reinterpret_cast<std::uintptr_t>(array.device_pointer()), false);
  d["strides"] = py::none();
  d["version"] = 3;
  // The functions that write it wait for their stream unless called with synchronize=False, and then
  // the caller synchronises before handing the array on (docs/gpu.md): consumers need not wait.
  d["stream"] = py::none();
  return d;
}

cudaStream_t stream_from(const py::object& stream) {
  if (stream.is_none()) return nullptr;
  // One parser for Python and C++ callers: m2f_edge.gpu.stream_handle (its TypeError names 'stream').
  py::object handle = py::module_::import("m2f_edge.gpu").attr("stream_handle")(stream);
  return reinterpret_cast<cudaStream_t>(handle.cast<std::uintptr_t>());
}

bool is_gpu_array(const py::handle& obj) {
  return py::isinstance<DeviceArray>(obj) || py::hasattr(obj, "__cuda_array_interface__") ||
         (py::hasattr(obj, "__dlpack_device__") && !py::isinstance<py::array>(obj) && [&] {
           py::tuple dev = obj.attr("__dlpack_device__")();
           int type = dev[0].cast<int>();
           return type == kDLCUDA || type == kDLCUDAManaged || type == kDLCUDAHost;
         }());
}

BorrowedView gpu_view_of(const py::handle& obj, const char* arg, cudaStream_t stream) {
  BorrowedView out;
  TensorView& v = out.view;
  v.device = Device::cuda;
  // numpy arrays have __dlpack__ too, and would answer a CUDA stream argument with an unrelated error
  if (py::isinstance<py::array>(obj))
    throw py::type_error(std::string("argument '") + arg +
                         "': expected a GPU array (CuPy, PyTorch, m2f_edge DeviceArray, ...), got a numpy array in "
                         "host memory");
  if (py::isinstance<DeviceArray>(obj)) {
    v = obj.cast<const DeviceArray&>().view();
    if (!obj.cast<const DeviceArray&>().mapped() && v.device_id != current_device())
      throw py::value_error(device_mismatch(arg, v.device_id, current_device()));
    out.keep_alive = std::shared_ptr<void>(new py::object(py::reinterpret_borrow<py::object>(obj)), [](void* p) {
      py::gil_scoped_acquire gil;
      delete static_cast<py::object*>(p);
    });
    return out;
  }
  if (py::hasattr(obj, "__cuda_array_interface__")) {
    py::dict cai = obj.attr("__cuda_array_interface__");
    // --- types
    v.dtype = dtype_from_typestr(cai["typestr"].cast<std::string>(), arg);
    // --- sizes
    py::tuple shape = cai["shape"];
    if (shape.size() > static_cast<std::size_t>(kMaxDims))
      throw py::value_error(std::string("argument '") + arg + "': too many dimensions");
    v.ndim = static_cast<int>(shape.size());
    for (int i = 0; i < v.ndim; ++i) v.shape[i] = shape[static_cast<std::size_t>(i)].cast<std::int64_t>();
    if (cai.contains("strides") && !cai["strides"].is_none()) {
      py::tuple strides = cai["strides"];
      for (int i = 0; i < v.ndim; ++i) v.strides[i] = strides[static_cast<std::size_t>(i)].cast<std::int64_t>();
    } else {
      fill_contiguous_strides(v);
    }
    if (cai.contains("mask") && !cai["mask"].is_none())
      throw py::value_error(std::string("argument '") + arg + "': masked GPU arrays are not supported");
    // --- device
    py::tuple data = cai["data"];
    v.data = reinterpret_cast<void*>(data[0].cast<std::uintptr_t>());
    v.device_id = current_device();
    check_aligned(v, arg);
    check_pointer_usable(v.data, arg);
    if (cai.contains("stream") && !cai["stream"].is_none()) {
      auto producer = cai["stream"].cast<std::uintptr_t>();
      if (producer != 0) wait_for_stream(reinterpret_cast<cudaStream_t>(producer), stream);
    }
    out.keep_alive = std::shared_ptr<void>(new py::object(py::reinterpret_borrow<py::object>(obj)), [](void* p) {
      py::gil_scoped_acquire gil;
      delete static_cast<py::object*>(p);
    });
    return out;
  }
  if (py::hasattr(obj, "__dlpack__")) {
    // Ask where the tensor lives before asking for it with a CUDA stream: a CPU producer may refuse
    // the stream argument with an error that does not name the argument.
    if (py::hasattr(obj, "__dlpack_device__")) {
      py::tuple where = obj.attr("__dlpack_device__")();
      const int type = where[0].cast<int>();
      if (type != kDLCUDA && type != kDLCUDAManaged && type != kDLCUDAHost)
        throw py::type_error(std::string("argument '") + arg + "': expected a GPU array, got a DLPack tensor on device type " +
                             std::to_string(type) + " (not CUDA)");
    }
    // The producer makes its work visible on `stream` (DLPack: 1 means the legacy default stream).
    auto stream_arg = stream == nullptr ? py::int_(1) : py::int_(reinterpret_cast<std::uintptr_t>(stream));
    py::capsule capsule = obj.attr("__dlpack__")(py::arg("stream") = stream_arg);
    if (std::string(capsule.name() ? capsule.name() : "") != "dltensor")
      throw py::value_error(std::string("argument '") + arg + "': __dlpack__ did not return a DLPack capsule");
    auto* managed = static_cast<DLManagedTensor*>(capsule.get_pointer());
    // The capsule is consumed: we call the deleter ourselves when the view is no longer needed.
    PyCapsule_SetName(capsule.ptr(), "used_dltensor");
    out.keep_alive = std::shared_ptr<void>(managed, [](void* p) {
      auto* m = static_cast<DLManagedTensor*>(p);
      py::gil_scoped_acquire gil;  // producers written in Python or Cython may need it
      if (m->deleter) m->deleter(m);
    });
    out.from_dlpack = true;
    const DLTensor& t = managed->dl_tensor;
    // --- device
    if (t.device.device_type != kDLCUDA && t.device.device_type != kDLCUDAManaged &&
        t.device.device_type != kDLCUDAHost)
      throw py::value_error(std::string("argument '") + arg + "': the DLPack tensor is not in CUDA memory");
    // --- types
    v.dtype = dtype_from_dlpack(t.dtype, arg);
    // --- sizes
    if (t.ndim > kMaxDims) throw py::value_error(std::string("argument '") + arg + "': too many dimensions");
    v.ndim = t.ndim;
    for (int i = 0; i < v.ndim; ++i) v.shape[i] = t.shape[i];
    if (t.strides) {
      for (int i = 0; i < v.ndim; ++i) v.strides[i] = t.strides[i] * static_cast<std::int64_t>(dtype_size(v.dtype));
    } else {
      fill_contiguous_strides(v);
    }
    v.data = static_cast<char*>(t.data) + t.byte_offset;
    v.device_id = t.device.device_id;
    if (t.device.device_type == kDLCUDA && t.device.device_id != current_device())
      throw py::value_error(device_mismatch(arg, t.device.device_id, current_device()));
    check_aligned(v, arg);
    return out;
  }
  throw py::type_error(std::string("argument '") + arg +
                       "': expected a GPU array (__cuda_array_interface__ or __dlpack__: CuPy, PyTorch, "
                       "jetson-utils, m2f_edge DeviceArray), got " +
                       py::str(py::type::handle_of(obj)).cast<std::string>());
}

py::dict results_to_python(cuda::PostprocessWorkspace& w, cudaStream_t stream, const std::string& form) {
  FrameInstances r;
  {
    py::gil_scoped_release release;
    r = cuda::read_results(w, stream);
  }
  const std::int64_t bytes = r.crop_offsets.back();
  if (form == "host") {  // the crops land in a host buffer that numpy then owns, as on the CPU
    r.crops = MaskBuffer::allocate(static_cast<std::size_t>(std::max<std::int64_t>(bytes, 1)));
    {
      py::gil_scoped_release release;
      cuda::copy_crops(w, r, r.crops.data(), stream);
    }
    return frame_instances_to_python(std::move(r));
  }
  auto device = std::make_shared<DeviceArray>(std::vector<std::int64_t>{bytes}, DType::uint8, false);
  {
    py::gil_scoped_release release;
    cuda::copy_crops(w, r, device->device_pointer(), stream);
  }
  py::object crops_out;
  std::string key = "crops";
  if (form == "device") {
    crops_out = py::cast(device);
  } else {  // packed: the crops' bytes 8 to a byte, as numpy.packbits(crops)
    const std::int64_t packed_bytes = (bytes + 7) / 8;
    DeviceArray packed({1, 1, packed_bytes}, DType::uint8, false);
    py::array_t<std::uint8_t> host(static_cast<py::ssize_t>(packed_bytes));
    void* dst = host.mutable_data();
    {
      py::gil_scoped_release release;
      TensorView flat = device->view();
      flat.ndim = 3;
      flat.shape = {1, 1, bytes, 0, 0, 0};
      flat.strides = {bytes, bytes, 1, 0, 0, 0};
      if (bytes > 0) {
        cuda::pack_masks(flat, packed.view(), stream);
        M2F_CUDA_CHECK(cudaMemcpyAsync(dst, packed.device_pointer(), packed.nbytes(), cudaMemcpyDeviceToHost, stream));
      }
      M2F_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    crops_out = host;
    key = "crops_packed";
  }
  py::dict out = frame_instances_to_python(std::move(r));  // crops empty here: replaced below
  out.attr("pop")("crops");
  out[py::str(key)] = crops_out;
  return out;
}

void check_masks_to(const std::string& form) {
  // --- types
  if (form != "host" && form != "device" && form != "packed")
    throw py::value_error("argument 'masks_to': expected 'host', 'device' or 'packed', got '" + form + "'");
}

}  // namespace m2f::bind
#endif  // M2F_WITH_CUDA
