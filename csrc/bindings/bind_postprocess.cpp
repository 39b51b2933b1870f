// Python entry points of post-processing: argument checks, then the core with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <initializer_list>
#include <sstream>
#include <string>

#include "bindings/array_view.hpp"
#include "bindings/frame_instances.hpp"
#include "m2f/postprocess.hpp"

namespace py = pybind11;

namespace m2f::bind {
namespace {

[[noreturn]] void fail(const std::string& message) { throw py::value_error(message); }

// view_of + require_dtype, with the expected dtypes named also for dtypes the core has no name for.
TensorView typed_view(const py::array& array, const char* arg, std::initializer_list<DType> allowed) {
  try {
    dtype_from_numpy(array.dtype(), arg);
  } catch (const py::type_error&) {
    std::string names;
    for (DType d : allowed) names += (names.empty() ? "" : " or ") + std::string(dtype_name(d));
    throw py::type_error(std::string("argument '") + arg + "': expected dtype " + names + ", got " +
                         py::str(static_cast<const py::object&>(array.dtype())).cast<std::string>());
  }
  TensorView v = view_of(array, arg);
  require_dtype(v, allowed, arg);
  return v;
}

SelectionOptions selection_options(float score_threshold, int max_instances, int threads) {
  // --- options
  if (std::isnan(score_threshold)) fail("argument 'score_threshold': expected a number, got NaN");
  if (max_instances < 0)
    fail("argument 'max_instances': expected >= 0, got " + std::to_string(max_instances));
  if (threads < 0) fail("argument 'threads': expected >= 0 (0 = all cores), got " + std::to_string(threads));
  SelectionOptions o;
  o.score_threshold = score_threshold;
  o.max_instances = max_instances;
  o.threads = threads;
  return o;
}

}  // namespace

// Hands the core's buffers to numpy; the crops move without a copy (a capsule owns them).
py::dict frame_instances_to_python(FrameInstances&& r) {
  const py::ssize_t n = static_cast<py::ssize_t>(r.count);
  const py::ssize_t used = static_cast<py::ssize_t>(r.crop_offsets.back());
  py::dict d;
  if (r.crops.data()) {
    auto* buffer = new MaskBuffer(std::move(r.crops));
    py::capsule owner(buffer, [](void* p) { delete static_cast<MaskBuffer*>(p); });
    d["crops"] = py::array_t<std::uint8_t>(used, buffer->data(), owner);
  } else {  // the crops live elsewhere (a GPU result kept on the device)
    d["crops"] = py::array_t<std::uint8_t>(0);
  }
  d["crop_offsets"] = py::array_t<std::int64_t>(n + 1, r.crop_offsets.data());
  d["scores"] = py::array_t<float>(n, r.scores.data());
  d["labels"] = py::array_t<std::int64_t>(n, r.labels.data());
  d["boxes"] = py::array_t<float>({n, py::ssize_t{4}}, r.boxes.data());
  d["areas"] = py::array_t<std::int64_t>(n, r.areas.data());
  d["query_indices"] = py::array_t<std::int64_t>(n, r.query_indices.data());
  d["image_size"] = py::make_tuple(r.height, r.width);
  return d;
}

namespace {

// The crops of one result (the dict's crops, crop_offsets, boxes) checked and seen by the core.
struct CropArgs {
  py::array_t<std::uint8_t, py::array::c_style> crops;
  py::array_t<std::int64_t, py::array::c_style | py::array::forcecast> offsets;
  std::vector<CropWindow> windows;
  CropSet set;
};

CropArgs crop_args(const py::array& crops, const py::array& crop_offsets, const py::array& boxes,
                   std::pair<int, int> image_size) {
  CropArgs a;
  // --- types
  if (!py::isinstance<py::array_t<std::uint8_t>>(crops) && !py::isinstance<py::array_t<bool>>(crops))
    throw py::type_error("argument 'crops': expected a uint8 or bool array");
  a.crops = py::array_t<std::uint8_t, py::array::c_style>::ensure(crops.dtype().is(py::dtype::of<bool>())
                                                                       ? crops.attr("view")("uint8")
                                                                       : static_cast<py::object>(crops));
  a.offsets = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(crop_offsets);
  auto box = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(boxes);
  if (!a.crops || !a.offsets || !box) throw py::type_error("argument 'crops': crops, offsets and boxes must be arrays");
  // --- sizes
  if (a.crops.ndim() != 1) fail("argument 'crops': expected a 1-D array, got " + std::to_string(a.crops.ndim()) + " dimensions");
  if (box.ndim() != 2 || box.shape(1) != 4) fail("argument 'boxes': expected (N, 4)");
  const py::ssize_t n = box.shape(0);
  if (a.offsets.ndim() != 1 || a.offsets.shape(0) != n + 1)
    fail("argument 'crop_offsets': expected " + std::to_string(n + 1) + " offsets (one more than boxes)");
  if (image_size.first < 0 || image_size.second < 0) fail("argument 'image_size': expected (H, W) >= 0");
  a.windows.resize(static_cast<std::size_t>(n));
  for (py::ssize_t i = 0; i < n; ++i) {
    int v[4];
    for (int j = 0; j < 4; ++j) {
      const double x = box.at(i, j);
      if (!(x == std::floor(x)) || x < 0 || x > 1e9)
        fail("argument 'boxes': crop windows must be non-negative integers, got " + std::to_string(x));
      v[j] = static_cast<int>(x);
    }
    a.windows[static_cast<std::size_t>(i)] = CropWindow{v[0], v[1], v[2], v[3]};
  }
  a.set.crops = a.crops.data();
  a.set.offsets = a.offsets.data();
  a.set.windows = a.windows.data();
  a.set.count = n;
  a.set.height = image_size.first;
  a.set.width = image_size.second;
  try {
    check_crops(a.set, a.crops.shape(0));
  } catch (const std::invalid_argument& e) {  // "name: why" from the core -> "argument 'name': why"
    const std::string what = e.what();
    const std::size_t colon = what.find(':');
    fail(colon == std::string::npos ? what : "argument '" + what.substr(0, colon) + "'" + what.substr(colon));
  }
  return a;
}

py::array_t<std::uint8_t> expand_crops_py(const py::array& crops, const py::array& crop_offsets, const py::array& boxes,
                                          std::pair<int, int> image_size, int threads) {
  CropArgs a = crop_args(crops, crop_offsets, boxes, image_size);
  if (threads < 0) fail("argument 'threads': expected >= 0 (0 = all cores), got " + std::to_string(threads));
  py::array_t<std::uint8_t> out({static_cast<py::ssize_t>(a.set.count), static_cast<py::ssize_t>(a.set.height),
                                 static_cast<py::ssize_t>(a.set.width)});
  TensorView o = view_of(out, "out");
  {
    py::gil_scoped_release release;
    expand_crops(a.set, o, threads);
  }
  return out;
}

py::array_t<std::int32_t> instance_map_crops_py(const py::array& crops, const py::array& crop_offsets,
                                                const py::array& boxes, std::pair<int, int> image_size, int threads) {
  CropArgs a = crop_args(crops, crop_offsets, boxes, image_size);
  if (threads < 0) fail("argument 'threads': expected >= 0 (0 = all cores), got " + std::to_string(threads));
  py::array_t<std::int32_t> out({static_cast<py::ssize_t>(a.set.height), static_cast<py::ssize_t>(a.set.width)});
  TensorView o = view_of(out, "out");
  {
    py::gil_scoped_release release;
    instance_map(a.set, o, threads);
  }
  return out;
}

py::list rle_encode_crops_py(const py::array& crops, const py::array& crop_offsets, const py::array& boxes,
                             std::pair<int, int> image_size, int threads) {
  CropArgs a = crop_args(crops, crop_offsets, boxes, image_size);
  if (threads < 0) fail("argument 'threads': expected >= 0 (0 = all cores), got " + std::to_string(threads));
  std::vector<std::string> counts;
  {
    py::gil_scoped_release release;
    counts = rle_encode(a.set, threads);
  }
  py::list out;
  for (const auto& c : counts) out.append(py::bytes(c));
  return out;
}

py::dict postprocess_deployable_py(const py::array& masks, const py::array& scores, const py::array& classes,
                                   const ResizeTransform& transform, float score_threshold, int max_instances,
                                   int threads) {
  // --- types
  TensorView m = typed_view(masks, "masks", {DType::float32, DType::float16, DType::uint8, DType::boolean});
  TensorView s = typed_view(scores, "scores", {DType::float32, DType::float16});
  TensorView c = typed_view(classes, "classes", {DType::int32, DType::int64});
  // --- sizes
  require_ndim(m, 3, 3, "masks");
  require_ndim(s, 1, 1, "scores");
  require_ndim(c, 1, 1, "classes");
  if (s.shape[0] != m.shape[0])
    fail("argument 'scores': expected " + std::to_string(m.shape[0]) + " scores (one per mask), got shape " +
         shape_string(s));
  if (c.shape[0] != m.shape[0])
    fail("argument 'classes': expected " + std::to_string(m.shape[0]) + " classes (one per mask), got shape " +
         shape_string(c));
  if (m.shape[1] != transform.net_height || m.shape[2] != transform.net_width)
    fail("argument 'transform': its network size " + std::to_string(transform.net_height) + "x" +
         std::to_string(transform.net_width) + " does not match masks of shape " + shape_string(m));
  // --- device
  // view_of only makes CPU views; GPU outputs go through m2f_edge.gpu.
  const SelectionOptions options = selection_options(score_threshold, max_instances, threads);
  FrameInstances result;
  {
    py::gil_scoped_release release;
    result = postprocess_deployable(m, s, c, transform, options);
  }
  return frame_instances_to_python(std::move(result));
}

py::dict postprocess_raw_py(const py::array& class_logits, const py::array& mask_logits,
                            const ResizeTransform& transform, int no_object_index, int topk, float score_threshold,
                            int max_instances, int threads) {
  // --- types
  TensorView cl = typed_view(class_logits, "class_logits", {DType::float32, DType::float16});
  TensorView ml = typed_view(mask_logits, "mask_logits", {DType::float32, DType::float16});
  // --- sizes
  require_ndim(cl, 2, 2, "class_logits");
  require_ndim(ml, 3, 3, "mask_logits");
  if (cl.shape[1] < 2)
    fail("argument 'class_logits': expected (Q, C+1) with C >= 1 plus the no-object column, got shape " +
         shape_string(cl));
  if (ml.shape[0] != cl.shape[0])
    fail("argument 'mask_logits': expected " + std::to_string(cl.shape[0]) +
         " queries (as class_logits), got shape " + shape_string(ml));
  if (ml.shape[1] < 1 || ml.shape[2] < 1)
    fail("argument 'mask_logits': expected a non-empty low-resolution size, got shape " + shape_string(ml));
  if (ml.shape[1] > transform.net_height || ml.shape[2] > transform.net_width)
    fail("argument 'transform': its network size " + std::to_string(transform.net_height) + "x" +
         std::to_string(transform.net_width) + " is smaller than the mask logits of shape " + shape_string(ml) +
         " (expected about network size / 4)");
  const std::int64_t columns = cl.shape[1];
  if (no_object_index < -columns || no_object_index >= columns)
    fail("argument 'no_object_index': expected 0 (TAO) or -1 / " + std::to_string(columns - 1) +
         " (last column) for " + std::to_string(columns) + " columns, got " + std::to_string(no_object_index));
  if (topk < 1) fail("argument 'topk': expected >= 1, got " + std::to_string(topk));
  // --- device
  const SelectionOptions options = selection_options(score_threshold, max_instances, threads);
  RawHeadOptions raw;
  raw.no_object_index = static_cast<int>(no_object_index < 0 ? no_object_index + columns : no_object_index);
  raw.topk = topk;
  FrameInstances result;
  {
    py::gil_scoped_release release;
    result = postprocess_raw(cl, ml, transform, raw, options);
  }
  return frame_instances_to_python(std::move(result));
}

py::array_t<std::int32_t> instance_map_py(const py::array& masks, int threads) {
  // --- types
  TensorView m = typed_view(masks, "masks", {DType::uint8, DType::boolean});
  // --- sizes
  require_ndim(m, 3, 3, "masks");
  if (threads < 0) fail("argument 'threads': expected >= 0 (0 = all cores), got " + std::to_string(threads));
  py::array_t<std::int32_t> out({static_cast<py::ssize_t>(m.shape[1]), static_cast<py::ssize_t>(m.shape[2])});
  TensorView o = view_of(out, "out");
  {
    py::gil_scoped_release release;
    instance_map(m, o, threads);
  }
  return out;
}

py::list rle_encode_py(const py::array& masks, int threads) {
  // --- types
  TensorView m = typed_view(masks, "masks", {DType::uint8, DType::boolean});
  // --- sizes
  require_ndim(m, 2, 3, "masks");
  if (threads < 0) fail("argument 'threads': expected >= 0 (0 = all cores), got " + std::to_string(threads));
  if (m.ndim == 2) {  // one mask: view it as (1, H, W)
    m.ndim = 3;
    m.shape = {1, m.shape[0], m.shape[1], 0, 0, 0};
    m.strides = {0, m.strides[0], m.strides[1], 0, 0, 0};
  }
  std::vector<std::string> counts;
  {
    py::gil_scoped_release release;
    counts = rle_encode(m, threads);
  }
  py::list out;
  for (const auto& c : counts) out.append(py::bytes(c));
  return out;
}

}  // namespace

void bind_postprocess(py::module_& m) {
  m.def("postprocess_deployable", &postprocess_deployable_py, py::arg("masks"), py::arg("scores"), py::arg("classes"),
        py::arg("transform"), py::kw_only(), py::arg("score_threshold") = 0.5f, py::arg("max_instances") = 100,
        py::arg("threads") = 0,
        R"doc(Instances of one image from the deployable contract (post-processing inside the graph).

masks (K, net_h, net_w) float32/float16/uint8/bool (0/1 values), scores (K,) float32, classes (K,)
int32/int64, any strides (read in place). Keeps scores >= score_threshold (NaN never), sorts them
descending (stable), keeps the first max_instances, crops each mask to transform's content region,
resizes it bilinearly (cv2 INTER_LINEAR positions) to the frame size and thresholds > 0.5; masks
that come out empty are dropped. Each mask is computed only inside its box and kept cropped to it.
Returns dict(crops (total,) uint8 0/1: instance i's mask inside boxes[i], row-major, at
crops[crop_offsets[i]:crop_offsets[i + 1]]; crop_offsets (N+1,) int64, scores (N,) float32,
labels (N,) int64, boxes (N,4) float32 xyxy with x2 = last column + 1 (exact integers: the crop
windows), areas (N,) int64, query_indices (N,) int64, image_size (H, W)). expand_crops gives full (N,H,W) masks.
Only kept masks are read.)doc");
  m.def("postprocess_raw", &postprocess_raw_py, py::arg("class_logits"), py::arg("mask_logits"), py::arg("transform"),
        py::kw_only(), py::arg("no_object_index") = 0, py::arg("topk") = 100, py::arg("score_threshold") = 0.5f,
        py::arg("max_instances") = 100, py::arg("threads") = 0,
        R"doc(Instances of one image from the raw-head contract, with TAO's instance inference.

class_logits (Q, C+1) and mask_logits (Q, h, w) float32/float16, any strides. Softmax over C+1,
drop the no-object column (no_object_index: 0 for TAO, -1 for detectron2 / Hugging Face), top-k over
Q*C (ties to the lower index), upsample each picked query's logits bilinearly (align_corners=False)
to the network size, mask = logit > 0, score = prob * mean sigmoid inside the mask. Then as
postprocess_deployable: threshold, sort, cap, map to the frame. Returns the same dict.)doc");
  m.def("instance_map", &instance_map_py, py::arg("masks"), py::kw_only(), py::arg("threads") = 0,
        "(H, W) int32 label image of masks (N, H, W) uint8/bool: 0 = background, i + 1 = instance i; the lower "
        "index wins where masks overlap.");
  m.def("rle_encode", &rle_encode_py, py::arg("masks"), py::kw_only(), py::arg("threads") = 0,
        "COCO RLE `counts` (bytes, the compressed string form) of masks (N, H, W) or (H, W) uint8/bool, any "
        "strides; byte-identical to pycocotools.mask.encode(np.asfortranarray(mask)). Returns one per mask.");
  m.def("expand_crops", &expand_crops_py, py::arg("crops"), py::arg("crop_offsets"), py::arg("boxes"),
        py::arg("image_size"), py::kw_only(), py::arg("threads") = 0,
        "Full (N, H, W) uint8 masks from a post-processing result's crops, crop_offsets and boxes (the crop "
        "windows); zeros outside each window.");
  m.def("instance_map_crops", &instance_map_crops_py, py::arg("crops"), py::arg("crop_offsets"), py::arg("boxes"),
        py::arg("image_size"), py::kw_only(), py::arg("threads") = 0,
        "instance_map of the full masks the crops stand for, without building them.");
  m.def("rle_encode_crops", &rle_encode_crops_py, py::arg("crops"), py::arg("crop_offsets"), py::arg("boxes"),
        py::arg("image_size"), py::kw_only(), py::arg("threads") = 0,
        "rle_encode of the full masks the crops stand for, without building them (byte-identical).");
}

}  // namespace m2f::bind
