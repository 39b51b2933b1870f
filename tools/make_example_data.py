#!/usr/bin/env python3
"""Write examples/data/: a few generated scenes (PNG) and a short generated video (MP4), the inputs of the
README's first commands. Seeded: the same numpy and OpenCV write the same files.

    PYTHONPATH=$PWD python tools/make_example_data.py            # rewrites examples/data/

The scenes come from m2f_edge.demo.scenes, the generator the demo model was trained on; the video pans
across a few wider scenes, so objects move through the frame and leave it.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENE_SEED, SCENES, SCENE_SIZE = 2024, 4, (256, 256)
VIDEO_SEED, VIDEO_SHOTS, FRAMES_PER_SHOT, VIDEO_FPS = 2025, 3, 10, 10.0
VIDEO_SIZE = (240, 320)  # height, width
PAN_PIXELS_PER_FRAME = 6


def write_scenes(folder: str) -> list:
    import cv2

    from m2f_edge import demo

    paths = []
    for index, scene in enumerate(demo.scenes(SCENES, seed=SCENE_SEED, size=SCENE_SIZE)):
        path = os.path.join(folder, "scene_{}.png".format(index + 1))
        if not cv2.imwrite(path, scene.image, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise OSError("could not write " + path)
        paths.append(path)
    return paths


def write_video(path: str) -> int:
    import cv2

    from m2f_edge import demo

    height, width = VIDEO_SIZE
    pan = PAN_PIXELS_PER_FRAME * (FRAMES_PER_SHOT - 1)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, (width, height))
    if not writer.isOpened():
        raise OSError("OpenCV {} cannot write MP4 (mp4v) to {}".format(cv2.__version__, path))
    frames = 0
    try:
        for scene in demo.scenes(VIDEO_SHOTS, seed=VIDEO_SEED, size=(height, width + pan)):
            for step in range(FRAMES_PER_SHOT):
                left = step * PAN_PIXELS_PER_FRAME
                writer.write(scene.image[:, left:left + width].copy())
                frames += 1
    finally:
        writer.release()
    return frames


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "examples", "data"), help="folder (examples/data)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for path in write_scenes(args.out):
        print("wrote {} ({} bytes)".format(path, os.path.getsize(path)))
    video = os.path.join(args.out, "scenes.mp4")
    frames = write_video(video)
    print("wrote {} ({} frames, {} bytes)".format(video, frames, os.path.getsize(video)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
