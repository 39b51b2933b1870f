"""m2f_edge: NVIDIA TAO Mask2Former instance segmentation on Jetson and any other machine.

    import m2f_edge
    seg = m2f_edge.Segmenter("mask2former_swint.onnx")   # or a TensorRT .engine
    instances = seg.run(frame)                            # HxWx3 uint8 BGR frame
    instances.masks, instances.scores, instances.labels, instances.boxes
"""

import logging
import os


def _core_missing(error: ImportError) -> ImportError:
    """The ImportError to raise when m2f_edge._core cannot be imported, saying why and what to do."""
    package = os.path.dirname(os.path.abspath(__file__))
    checkout = os.path.dirname(package)
    in_checkout = os.path.isfile(os.path.join(checkout, "tools", "dev_build.sh"))
    if not isinstance(error, ModuleNotFoundError):
        what = "its C++ core (m2f_edge._core) is there but does not load ({})".format(error)
    else:
        what = "its C++ core (m2f_edge._core) is not built"
    if in_checkout:
        return ImportError(
            "m2f_edge was imported from the source checkout {} and {}. If you installed m2f-edge with pip, "
            "run Python from another folder: the checkout's m2f_edge folder, first on sys.path when Python "
            "starts here, hides the installed package. To use the checkout itself, build the core in place: "
            "tools/dev_build.sh".format(checkout, what))
    return ImportError("m2f_edge in {}: {}; reinstall it (pip install --force-reinstall m2f-edge, or pip "
                       "install . from a checkout)".format(package, what))


try:
    from ._core import build_info as _core_build_info
except ImportError as _error:
    if isinstance(_error, ModuleNotFoundError) and _error.name not in (None, __name__ + "._core"):
        raise  # something the core itself imports
    raise _core_missing(_error) from None

__version__ = _core_build_info()["version"]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def build_info():
    """What the core was built with and what the machine offers now.

    Returns a dict: ``version``, ``cuda`` (bool) and ``cuda_version``, ``cuda_emulation`` (True only in
    the test build whose kernels run on the CPU, ``M2F_CUDA=EMULATE``), ``tensorrt`` (bool),
    ``tensorrt_version`` (the headers built against), ``tensorrt_runtime_version`` and
    ``tensorrt_library`` (the libnvinfer the process loaded: the first one loaded serves everyone),
    ``tensorrt_standin`` (True only in the emulation build's TensorRT stand-in), ``gpu_present`` (a usable CUDA device at run time), ``gpu_count``,
    ``gpu_name``, ``gpu_compute_capability``, ``gpu_integrated`` and ``gpu_error``.
    """
    return _core_build_info()


from .instances import Instances  # noqa: E402  (after build_info: both need _core)
from .segmenter import Prepared, Segmenter  # noqa: E402
from .spec import Spec, load_spec  # noqa: E402

__all__ = ["Segmenter", "Instances", "Prepared", "Spec", "build_info", "load_spec", "__version__"]
