"""OpenCV, imported where it is used: on Jetson the package must not pull PyPI's OpenCV (docs/design.md), so
its absence is told at the point of use, with which OpenCV to install."""

# the image files every command and source reads (cv2.imread decodes them all)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm")


def require_cv2(purpose: str):
    """The cv2 module, or ImportError naming `purpose` and the OpenCV it needs."""
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "{} needs OpenCV: on Jetson use JetPack's system OpenCV (python3-opencv, built with GStreamer); "
            "elsewhere pip install 'm2f-edge[opencv]'".format(purpose)
        ) from exc
    return cv2
