# Chooses CMAKE_CUDA_ARCHITECTURES from the CUDA version found, before enable_language(CUDA).
# Override with -DCMAKE_CUDA_ARCHITECTURES=... or the environment variable M2F_CUDA_ARCHITECTURES.
if(DEFINED ENV{M2F_CUDA_ARCHITECTURES} AND NOT "$ENV{M2F_CUDA_ARCHITECTURES}" STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES "$ENV{M2F_CUDA_ARCHITECTURES}" CACHE STRING "CUDA architectures" FORCE)
  message(STATUS "m2f_edge: CUDA architectures ${CMAKE_CUDA_ARCHITECTURES} (from M2F_CUDA_ARCHITECTURES)")
  return()
endif()
if(DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  message(STATUS "m2f_edge: CUDA architectures ${CMAKE_CUDA_ARCHITECTURES} (from the cache or command line)")
  return()
endif()

execute_process(COMMAND ${CMAKE_CUDA_COMPILER} --version OUTPUT_VARIABLE _m2f_nvcc_out ERROR_QUIET)
string(REGEX MATCH "release ([0-9]+)\\.([0-9]+)" _m2f_match "${_m2f_nvcc_out}")
set(_m2f_cuda_major "${CMAKE_MATCH_1}")
set(_m2f_cuda_minor "${CMAKE_MATCH_2}")

if(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  # Jetson: Xavier sm_72 (dropped in CUDA 13), Orin sm_87, Thor sm_110 (CUDA 13).
  if(_m2f_cuda_major GREATER_EQUAL 13)
    set(_m2f_archs 87 110)
  else()
    set(_m2f_archs 72 87)
  endif()
else()
  # Discrete GPUs: T4 75, A100/A30 80, A2/A10/RTX30 86, L4/L40/RTX40 89, H100/H200 90; PTX of the newest
  # for later GPUs (B200, RTX 50 JIT-compile it). Each architecture adds nvcc time: override to build for one.
  if(_m2f_cuda_major GREATER_EQUAL 13)
    set(_m2f_archs 75 80 86 89 90 120-virtual)
  elseif(_m2f_cuda_major EQUAL 12 AND _m2f_cuda_minor GREATER_EQUAL 8)
    set(_m2f_archs 75 80 86 89 90 120-virtual)
  elseif(_m2f_cuda_major EQUAL 12)
    set(_m2f_archs 75 80 86 89 90)  # 90 = SASS and PTX: later GPUs JIT the PTX
  else()
    set(_m2f_archs 70 75 80 86)  # V100 to A10; 86 = SASS and PTX
  endif()
endif()
set(CMAKE_CUDA_ARCHITECTURES "${_m2f_archs}" CACHE STRING "CUDA architectures")
message(STATUS "m2f_edge: CUDA ${_m2f_cuda_major}.${_m2f_cuda_minor} on ${CMAKE_SYSTEM_PROCESSOR}: architectures ${CMAKE_CUDA_ARCHITECTURES}")
