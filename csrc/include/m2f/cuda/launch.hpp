// M2F_LAUNCH(kernel, grid, block, stream)(arguments...) launches a kernel. nvcc and clang get
// the triple-chevron launch. The CUDA emulation build (M2F_CUDA=EMULATE: the GPU tests on machines
// without a GPU) runs the kernel on the CPU instead, every thread of every block, through
// emulation/emulation.hpp. The macro keeps one source for both. A lambda forwards the arguments, so
// template kernels still deduce their parameters from them, as they do with <<<...>>>.
#pragma once

#if defined(M2F_CUDA_EMULATION)
#include "emulation/emulation.hpp"
#define M2F_LAUNCH(kernel, grid, block, stream) \
  ::m2f::emulation::Launch([](auto&... arguments) { kernel(arguments...); }, (grid), (block), (stream))
#else
#define M2F_LAUNCH(kernel, grid, block, stream) kernel<<<(grid), (block), 0, (stream)>>>
#endif
