// The TensorRT stand-in (see NvInfer.h here): the plugin library's one entry point m2f_edge calls.
#pragma once

#include "NvInfer.h"

extern "C" {
// As TensorRT's: `logger` is an nvinfer1::ILogger*, kept for the life of the process (the library
// logs through it whenever a plugin is created, long after this call).
bool initLibNvInferPlugins(void* logger, char const* libNamespace);
}
