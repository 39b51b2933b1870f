// m2f_edge._core.tensorrt: the TensorRT engine runner (builds with TensorRT only). Without
// TensorRT the submodule exists, says so (available = False) and Engine raises ImportError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef M2F_WITH_TENSORRT
#include "bindings/array_view.hpp"
#include "bindings/cuda_array.hpp"
#include "bindings/frame_views.hpp"
#include "tensorrt/engine_io.hpp"
#include "tensorrt/trt_pipeline.hpp"
#include "tensorrt/trt_runner.hpp"
#endif
#ifdef M2F_TENSORRT_STANDIN
#include <NvInfer.h>  // the stand-in's standin_logger_count
#endif

namespace py = pybind11;

namespace m2f::bind {
namespace {

#ifdef M2F_WITH_TENSORRT

std::string read_engine_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw py::value_error("argument 'engine': cannot read '" + path + "'");
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

py::object to_tuple(const std::vector<std::int64_t>& v) {
  py::tuple t(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) t[i] = v[i];
  return std::move(t);
}

// The settings Pipeline.update() takes, by the names of Pipeline's constructor arguments.
constexpr const char* kSettingNames =
    "score_threshold, max_instances, no_object_index, topk, mean, std, resize, color";

void apply_setting(trt::PipelineSettings& s, const std::string& name, const py::handle& value) {
  try {
    if (name == "score_threshold") {
      s.selection.score_threshold = value.cast<float>();
    } else if (name == "max_instances") {
      s.selection.max_instances = value.cast<int>();
    } else if (name == "no_object_index") {
      s.raw.no_object_index = value.cast<int>();
    } else if (name == "topk") {
      s.raw.topk = value.cast<int>();
    } else if (name == "mean") {
      s.preprocess.mean = value.cast<std::array<float, 3>>();
    } else if (name == "std") {
      s.preprocess.stddev = value.cast<std::array<float, 3>>();
    } else if (name == "resize") {
      s.preprocess.resize = parse_resize_mode(value.cast<std::string>());
    } else if (name == "color") {
      s.preprocess.color = parse_color_order(value.cast<std::string>());
    } else {
      throw py::type_error("update(): no setting '" + name + "' (settings: " + kSettingNames + ")");
    }
  } catch (const py::cast_error&) {
    throw py::type_error("argument '" + name + "': cannot take " + py::repr(value).cast<std::string>());
  } catch (const std::invalid_argument& e) {
    throw py::value_error("argument '" + name + "': " + e.what());
  }
}

py::dict settings_to_python(const trt::PipelineSettings& s) {
  py::dict d;
  d["score_threshold"] = s.selection.score_threshold;
  d["max_instances"] = s.selection.max_instances;
  d["no_object_index"] = s.raw.no_object_index;
  d["topk"] = s.raw.topk;
  d["mean"] = py::make_tuple(s.preprocess.mean[0], s.preprocess.mean[1], s.preprocess.mean[2]);
  d["std"] = py::make_tuple(s.preprocess.stddev[0], s.preprocess.stddev[1], s.preprocess.stddev[2]);
  d["resize"] = resize_mode_name(s.preprocess.resize);
  d["color"] = color_order_name(s.preprocess.color);
  return d;
}

// The runner, what it keeps between calls (trt::EngineIO) and its output pool.
class Engine {
 public:
  Engine(const std::string& bytes, int dla_core, int device, bool use_cuda_graph)
      : runner_(bytes.data(), bytes.size(), dla_core, device) {
    runner_.set_use_cuda_graph(use_cuda_graph);
  }
  trt::Runner& runner() { return runner_; }
  trt::EngineIO& io() { return io_; }

  std::shared_ptr<DeviceArray> output_buffer(const std::string& name, const std::vector<std::int64_t>& shape,
                                             DType dtype) {
    return outputs_.take(
        name, [&](const DeviceArray& a) { return a.shape() == shape && a.dtype() == dtype && a.mapped() == mapped_; },
        [&] { return std::make_shared<DeviceArray>(shape, dtype, mapped_); });
  }
  void set_mapped_outputs(bool mapped) { mapped_ = mapped; }
  void* address_for(const DeviceArray& output) {
    return output.nbytes() > 0 ? output.device_pointer() : io_.empty_output_address();
  }

 private:
  trt::Runner runner_;
  bool mapped_ = false;
  // Declared after the runner: destroyed first, while the TensorRT context that used them still exists.
  trt::EngineIO io_;
  trt::BufferPool<DeviceArray> outputs_{3};
};

void bind_engine(py::module_& t) {
  py::register_exception<trt::TensorRTError>(t, "TensorRTError", PyExc_RuntimeError);
  t.attr("available") = true;
#ifdef M2F_TENSORRT_STANDIN
  // The CUDA emulation build runs against csrc/emulation/tensorrt/, not TensorRT: its "engines" are
  // text the tests write.
  t.attr("standin") = true;
  t.def("_standin_logger_count", &standin_logger_count,
        "Stand-in only: how many distinct loggers TensorRT's runtimes and plugin library were given.");
#else
  t.attr("standin") = false;
#endif
  t.def("version", &trt::runtime_version, "Version of the TensorRT library loaded at run time.");
  t.def("header_version", &trt::header_version, "Version of the TensorRT headers the core was compiled with.");

  py::class_<Engine>(t, "Engine",
                     "A deserialized TensorRT engine and its execution context. engine: the path of a .engine\n"
                     "file or its bytes. dla_core: run on that DLA core (engines built for DLA). use_cuda_graph:\n"
                     "replay enqueueV3 from a CUDA graph while shapes and buffers stay the same (falls back to\n"
                     "eager execution where capture fails).")
      .def(py::init([](const py::object& engine, int dla_core, int device, bool use_cuda_graph) {
             // --- types
             std::string bytes;
             if (py::isinstance<py::bytes>(engine) || py::isinstance<py::bytearray>(engine) ||
                 py::isinstance<py::memoryview>(engine)) {
               bytes = py::bytes(engine).cast<std::string>();
             } else {
               bytes = read_engine_file(py::str(engine).cast<std::string>());
             }
             // --- sizes
             if (bytes.empty()) throw py::value_error("argument 'engine': the engine is empty");
             py::gil_scoped_release release;
             return new Engine(bytes, dla_core, device, use_cuda_graph);
           }),
           py::arg("engine"), py::kw_only(), py::arg("dla_core") = -1, py::arg("device") = 0,
           py::arg("use_cuda_graph") = false)
      .def_property_readonly("tensors",
                             [](Engine& e) {
                               py::list out;
                               for (const auto& i : e.runner().tensors()) {
                                 py::dict d;
                                 d["name"] = i.name;
                                 d["mode"] = i.is_input ? "input" : "output";
                                 d["dtype"] = i.trt_dtype;
                                 d["shape"] = to_tuple(i.shape);
                                 if (!i.min_shape.empty()) {
                                   d["min_shape"] = to_tuple(i.min_shape);
                                   d["opt_shape"] = to_tuple(i.opt_shape);
                                   d["max_shape"] = to_tuple(i.max_shape);
                                 }
                                 out.append(d);
                               }
                               return out;
                             })
      .def_property_readonly("device_memory_size", [](Engine& e) { return e.runner().device_memory_size(); })
      .def_property_readonly("cuda_graph_active", [](Engine& e) { return e.runner().graph_active(); })
      .def("set_mapped_outputs", &Engine::set_mapped_outputs,
           "Allocate output buffers in mapped host memory (zero-copy on integrated GPUs).")
      .def(
          "infer",
          [](Engine& e, const py::dict& inputs, const py::object& stream_obj, bool synchronize) {
            // --- device: the engine's, whatever this thread's current device is
            trt::DeviceScope on_device(e.runner().device());
            cudaStream_t stream = stream_obj.is_none() && synchronize ? e.io().own_stream() : stream_from(stream_obj);
            bool staged_host_input = false;
            std::vector<BorrowedView> borrowed;
            for (const auto& info : e.runner().tensors()) {
              if (!info.is_input) continue;
              // --- sizes
              if (!inputs.contains(info.name))
                throw py::value_error("argument 'inputs': missing input '" + info.name + "'");
              py::object value = inputs[py::str(info.name)];
              std::string arg = "inputs['" + info.name + "']";
              BorrowedView b;
              if (is_gpu_array(value)) {
                b = gpu_view_of(value, arg.c_str(), stream);
              } else {
                // A host array is copied into the engine's device buffer for that input first, on the
                // inference stream (so the copy is ordered before the kernels that read it).
                py::array host = py::array::ensure(value, py::array::c_style);
                if (!host) throw py::type_error("argument '" + arg + "': expected a GPU or numpy array");
                TensorView hv = view_of(host, arg.c_str());
                const std::size_t bytes = static_cast<std::size_t>(hv.numel()) * dtype_size(hv.dtype);
                void* staged = e.io().staging_input(info.name, bytes);
                M2F_CUDA_CHECK(cudaMemcpyAsync(staged, host.data(), bytes, cudaMemcpyHostToDevice, stream));
                b.view = hv;  // C-contiguous: the same shape and strides, in the staging buffer
                b.view.data = staged;
                b.view.device = Device::cuda;
                b.view.device_id = e.runner().device();
                b.copied_from_host = true;
                staged_host_input = true;
              }
              // --- types
              if (b.view.dtype != info.dtype)
                throw py::type_error("argument '" + arg + "': the engine expects " + info.trt_dtype + ", got " +
                                     dtype_name(b.view.dtype));
              if (!b.view.is_contiguous())
                throw py::value_error("argument '" + arg + "': TensorRT needs a C-contiguous array");
              e.runner().set_input_shape(info.name,
                                         std::vector<std::int64_t>(b.view.shape.begin(), b.view.shape.begin() + b.view.ndim));
              e.runner().set_tensor_address(info.name, b.view.data);
              borrowed.push_back(std::move(b));
            }
            py::dict outputs;
            for (const auto& info : e.runner().tensors()) {
              if (info.is_input) continue;
              std::shared_ptr<DeviceArray> buffer =
                  e.output_buffer(info.name, e.runner().output_shape(info.name), info.dtype);
              e.runner().set_tensor_address(info.name, e.address_for(*buffer));
              outputs[py::str(info.name)] = py::cast(buffer);
            }
            // An input borrowed through DLPack has its deleter called when `borrowed` goes, on return:
            // the producer may then free or reuse that memory while the engine still reads it, so
            // the call waits as if synchronize were given.
            bool must_wait = synchronize;
            for (const auto& b : borrowed) must_wait = must_wait || b.from_dlpack;
            {
              py::gil_scoped_release release;
              e.runner().enqueue(stream);
              if (staged_host_input) e.io().inputs_enqueued(stream);
              if (must_wait) M2F_CUDA_CHECK(cudaStreamSynchronize(stream));
            }
            return outputs;
          },
          py::arg("inputs"), py::kw_only(), py::arg("stream") = py::none(), py::arg("synchronize") = true,
          "Runs the engine on {input name: GPU or numpy array}. Returns {output name: DeviceArray}; the\n"
          "arrays stay valid while you hold them (a pool reuses a buffer only once it is released).\n"
          "A numpy input is copied into a device buffer the engine keeps for that input. stream: where to\n"
          "enqueue (None: the engine's own stream when synchronize, else the legacy default stream).\n"
          "synchronize=False returns before the GPU is done, except with an input taken through DLPack\n"
          "(released on return, so the call waits for the stream).")
      .def("take_log", [](Engine& e) { return e.runner().take_log(); },
           "TensorRT's warnings and errors since the last call.")
      .def(
          "last_timings",
          [](Engine& e) -> py::object {
            const trt::EnqueueTimings t = e.runner().last_timings();
            if (!t.valid) return py::none();
            py::dict d;
            d["enqueue_ms"] = t.enqueue_ms;
            d["gpu_ms"] = t.gpu_done ? py::object(py::float_(t.gpu_ms)) : py::object(py::none());
            return std::move(d);
          },
          "Timings of the last infer(): {'enqueue_ms': host time of the enqueue call, 'gpu_ms': GPU time\n"
          "between CUDA events recorded on its stream before and after it (None while the GPU has not\n"
          "finished: read, never waited for)}. None before the first infer().");

  py::class_<trt::Pipeline>(
      t, "Pipeline",
      "Frames on the GPU -> preprocess -> engine -> post-process without leaving the device. With\n"
      "use_cuda_graph, a second call with the same frame buffers captures all three stages in one CUDA\n"
      "graph and later calls replay it (falls back to eager launches where capture fails). outputs maps\n"
      "the contract names (pred_masks, pred_scores, pred_classes | pred_logits, pred_masks) to the\n"
      "engine's output names. The engine's own buffers are reused; results are copied out (masks_to).")
      .def(py::init([](Engine& engine, const std::string& contract, const std::string& input, const py::dict& outputs,
                       const std::string& color, const std::string& resize, std::array<float, 3> mean,
                       std::array<float, 3> stddev, float score_threshold, int max_instances, int no_object_index,
                       int topk, bool use_cuda_graph) {
             // --- types
             trt::PipelineOptions o;
             if (contract != "deployable" && contract != "raw")
               throw py::value_error("argument 'contract': expected 'deployable' or 'raw', got '" + contract + "'");
             o.raw_head = contract == "raw";
             auto name = [&](const char* key) {
               return outputs.contains(key) ? outputs[key].cast<std::string>() : std::string(key);
             };
             o.input = input;
             o.masks = name("pred_masks");
             o.scores = name("pred_scores");
             o.classes = name("pred_classes");
             o.class_logits = name("pred_logits");
             o.mask_logits = name("pred_masks");
             trt::PipelineSettings& settings = o.settings;
             settings.preprocess.color = parse_color_order(color);
             settings.preprocess.resize = parse_resize_mode(resize);
             settings.preprocess.mean = mean;
             settings.preprocess.stddev = stddev;
             settings.selection.score_threshold = score_threshold;
             settings.selection.max_instances = max_instances;
             settings.raw.no_object_index = no_object_index;
             settings.raw.topk = topk;
             o.use_cuda_graph = use_cuda_graph;
             return new trt::Pipeline(engine.runner(), o);
           }),
           py::arg("engine"), py::arg("contract"), py::kw_only(), py::arg("input"), py::arg("outputs") = py::dict(),
           py::arg("color") = "bgr", py::arg("resize") = "stretch",
           py::arg("mean") = std::array<float, 3>{0.485f, 0.456f, 0.406f},
           py::arg("std") = std::array<float, 3>{0.229f, 0.224f, 0.225f}, py::arg("score_threshold") = 0.5f,
           py::arg("max_instances") = 100, py::arg("no_object_index") = 0, py::arg("topk") = 100,
           py::arg("use_cuda_graph") = true, py::keep_alive<1, 2>())
      .def_property_readonly("cuda_graph_active", &trt::Pipeline::graph_active)
      .def_property_readonly("settings", [](const trt::Pipeline& p) { return settings_to_python(p.settings()); },
                             "The settings the next run() uses: {name: value} for every name update() takes.")
      .def(
          "update",
          [](trt::Pipeline& p, const py::kwargs& changes) {
            trt::PipelineSettings settings = p.settings();
            for (const auto& item : changes) apply_setting(settings, item.first.cast<std::string>(), item.second);
            p.update(settings);
          },
          "update(**settings): changes score_threshold, max_instances, no_object_index, topk, mean, std,\n"
          "resize or color for the next run(). A CUDA graph captured with the old settings is dropped (the\n"
          "next run is eager, the one after captures again). A bad value raises (TypeError or ValueError\n"
          "naming it) and changes nothing.")
      .def(
          "last_timings",
          [](const trt::Pipeline& p) -> py::object {
            const trt::PipelineTimings t = p.last_timings();
            if (!t.valid) return py::none();
            auto ms = [](bool set, float value) { return set ? py::object(py::float_(value)) : py::object(py::none()); };
            py::dict d;
            d["enqueue_ms"] = t.enqueue_ms;
            d["gpu_ms"] = ms(t.gpu_done, t.gpu_ms);
            d["preprocess_gpu_ms"] = ms(t.stages, t.preprocess_ms);
            d["infer_gpu_ms"] = ms(t.stages, t.infer_ms);
            d["postprocess_gpu_ms"] = ms(t.stages, t.postprocess_ms);
            d["cuda_graph"] = t.replayed_graph;
            return std::move(d);
          },
          "Timings of the last run(): {'enqueue_ms': host time to enqueue the three stages, 'gpu_ms': their\n"
          "GPU time, 'preprocess_gpu_ms', 'infer_gpu_ms', 'postprocess_gpu_ms': per stage, from CUDA events\n"
          "recorded on the run's stream between the stages, 'cuda_graph': whether the run replayed a CUDA\n"
          "graph}. A replayed graph is one launch: its stage times are None. GPU times are None while the\n"
          "GPU has not finished (read, never waited for). None before the first run().")
      .def(
          "run",
          [](trt::Pipeline& p, const py::object& frames, const py::object& stream_obj, const std::string& masks_to) {
            check_masks_to(masks_to);
            trt::DeviceScope on_device(p.device());
            cudaStream_t stream = stream_from(stream_obj);
            // --- device: frames must already be on the GPU (DeviceArray, mapped memory, CuPy, ...)
            const FrameViews in =
                frame_views(frames, [&](const py::handle& f) { return gpu_view_of(f, "frames", stream); });
            std::vector<ResizeTransform> transforms;
            {
              py::gil_scoped_release release;
              transforms = p.run(in.frames, stream);
            }
            py::list results;
            for (std::size_t b = 0; b < transforms.size(); ++b) {
              py::dict r = results_to_python(p.workspace(b), stream, masks_to);
              r["transform"] = py::cast(transforms[b]);
              results.append(r);
            }
            return results;
          },
          py::arg("frames"), py::kw_only(), py::arg("stream") = py::none(), py::arg("masks_to") = "host",
          "Runs the frames (GPU arrays: a list of (H, W, C) or (H, W) uint8 frames, or one (B, H, W, C) batch)\n"
          "through; one result dict per frame.");
}

#else

constexpr const char kNoTensorRT[] =
    "m2f_edge was built without TensorRT: install TensorRT (JetPack ships it; on x86 the TensorRT "
    "tarball or packages), then reinstall m2f_edge with M2F_CUDA=ON and TENSORRT_ROOT set if it is "
    "not in a standard place. The onnxruntime backend runs without it.";

void bind_engine(py::module_& t) {
  t.attr("available") = false;
  t.attr("unavailable_reason") = kNoTensorRT;
  t.def("Engine", [](py::args, py::kwargs) -> py::object { throw py::import_error(kNoTensorRT); }, kNoTensorRT);
  t.def("version", []() -> py::object { return py::none(); }, "None: built without TensorRT.");
}

#endif

}  // namespace

void bind_tensorrt(py::module_& m) {
  py::module_ t = m.def_submodule("tensorrt", "TensorRT engine runner (builds with TensorRT)");
  bind_engine(t);
}

}  // namespace m2f::bind
