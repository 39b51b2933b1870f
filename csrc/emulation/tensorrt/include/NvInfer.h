// A stand-in for TensorRT's runtime API, compiled only into the CUDA emulation build
// (M2F_CUDA=EMULATE), so that csrc/tensorrt/ (the runner, the pipeline) and its binding run in CI
// on machines without a GPU or TensorRT. It declares exactly the subset of nvinfer1 that
// csrc/tensorrt/ calls, with TensorRT 10.3's names and signatures (virtual here, where TensorRT's
// classes forward to an implementation), and nothing else: a call outside it fails to compile.
//
// Its "engines" are text (standin.cpp says the format), written by the tests: tensors, profiles,
// and a formula per output, computed on the CPU in stream order from the input. It enforces the
// rules TensorRT states and a first device run would otherwise find:
//  - every input with an optimisation profile needs setInputShape before enqueueV3;
//  - a shape change re-plans the context on the next enqueueV3, which must not be captured; work
//    captured under an older plan is stale when replayed: it writes nothing and logs an error
//    (TensorRT: wrong results or cudaErrorIllegalAddress);
//  - enqueueV3 runs on the device the engine was deserialized on (the current device at the call);
//  - a capture starting while this context's earlier enqueues have not finished is refused
//    (trtexec synchronises after warm-up, before capturing);
//  - loggers: the plugin library keeps the one it was initialised with; every logger handed to it
//    or to createInferRuntime is counted (standin_logger_count), so a test sees that one is shared.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "NvInferVersion.h"

namespace nvinfer1 {

class Dims64 {
 public:
  static constexpr int32_t MAX_DIMS{8};
  int32_t nbDims;
  int64_t d[MAX_DIMS];
};
using Dims = Dims64;

enum class DataType : int32_t { kFLOAT = 0, kHALF = 1, kINT8 = 2, kINT32 = 3, kBOOL = 4, kUINT8 = 5, kFP8 = 6,
                                kBF16 = 7, kINT64 = 8, kINT4 = 9 };
enum class TensorIOMode : int32_t { kNONE = 0, kINPUT = 1, kOUTPUT = 2 };
enum class OptProfileSelector : int32_t { kMIN = 0, kOPT = 1, kMAX = 2 };

class ILogger {
 public:
  enum class Severity : int32_t { kINTERNAL_ERROR = 0, kERROR = 1, kWARNING = 2, kINFO = 3, kVERBOSE = 4 };
  virtual void log(Severity severity, char const* msg) noexcept = 0;
  ILogger() = default;
  virtual ~ILogger() = default;

 protected:
  ILogger(ILogger const&) = default;
  ILogger& operator=(ILogger const&) & = default;
};

class IExecutionContext {
 public:
  virtual ~IExecutionContext() noexcept = default;
  virtual Dims getTensorShape(char const* tensorName) const noexcept = 0;
  virtual bool setInputShape(char const* tensorName, Dims const& dims) noexcept = 0;
  virtual bool setTensorAddress(char const* tensorName, void* data) noexcept = 0;
  virtual void const* getTensorAddress(char const* tensorName) const noexcept = 0;
  virtual bool enqueueV3(cudaStream_t stream) noexcept = 0;
};

class ICudaEngine {
 public:
  virtual ~ICudaEngine() noexcept = default;
  virtual IExecutionContext* createExecutionContext() noexcept = 0;
  virtual int32_t getNbIOTensors() const noexcept = 0;
  virtual char const* getIOTensorName(int32_t index) const noexcept = 0;
  virtual TensorIOMode getTensorIOMode(char const* tensorName) const noexcept = 0;
  virtual DataType getTensorDataType(char const* tensorName) const noexcept = 0;
  virtual Dims getTensorShape(char const* tensorName) const noexcept = 0;
  virtual int32_t getNbOptimizationProfiles() const noexcept = 0;
  virtual Dims getProfileShape(char const* tensorName, int32_t profileIndex, OptProfileSelector select) const noexcept = 0;
  virtual int64_t getDeviceMemorySizeV2() const noexcept = 0;
};

class IRuntime {
 public:
  virtual ~IRuntime() noexcept = default;
  virtual int32_t getNbDLACores() const noexcept = 0;
  virtual void setDLACore(int32_t dlaCore) noexcept = 0;
  virtual ICudaEngine* deserializeCudaEngine(void const* blob, std::size_t size) noexcept = 0;
};

IRuntime* createInferRuntime(ILogger& logger) noexcept;

}  // namespace nvinfer1

extern "C" int32_t getInferLibVersion() noexcept;

// Stand-in only (no TensorRT has it): how many distinct loggers the plugin library and the runtimes
// were given since the process started.
int standin_logger_count() noexcept;
