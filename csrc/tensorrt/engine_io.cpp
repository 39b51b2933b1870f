#include "tensorrt/engine_io.hpp"

namespace m2f::trt {

void* EngineIO::staging_input(const std::string& name, std::size_t bytes) {
  if (staging_read_.get()) staging_read_.synchronize();
  cuda::DeviceBuffer& buffer = staging_[name];
  if (buffer.size() != bytes) buffer = cuda::DeviceBuffer(bytes);
  return buffer.data();
}

void EngineIO::inputs_enqueued(cudaStream_t stream) {
  if (!staging_read_.get()) staging_read_ = cuda::Event::create(false);
  staging_read_.record(stream);
}

cudaStream_t EngineIO::own_stream() {
  if (!stream_.get()) stream_ = cuda::Stream::create();
  return stream_.get();
}

void* EngineIO::empty_output_address() {
  if (!empty_output_.data()) empty_output_ = cuda::DeviceBuffer(256);
  return empty_output_.data();
}

}  // namespace m2f::trt
