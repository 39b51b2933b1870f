"""m2f_edge: NVIDIA TAO Mask2Former instance segmentation on Jetson and any other machine."""

from ._core import build_info as _core_build_info

__version__ = _core_build_info()["version"]


def build_info():
    """What the core was built with and what the machine offers now.

    Returns a dict: ``version``, ``cuda`` (bool) and ``cuda_version``, ``tensorrt`` (bool) and
    ``tensorrt_version``, ``gpu_present`` (a usable CUDA device at run time), ``gpu_count``,
    ``gpu_name``, ``gpu_compute_capability``, ``gpu_integrated`` and ``gpu_error``.
    """
    return _core_build_info()


__all__ = ["build_info", "__version__"]
