"""The m2f-edge command line: `m2f-edge <command> ...` (also `python -m m2f_edge <command> ...`).

Each command lives in m2f_edge/commands/<name>.py, a hyphen in the name an underscore there (see m2f_edge.commands
for the protocol).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from typing import Callable, List, Optional, Tuple

COMMANDS = ["segment", "info", "run", "verify", "build", "export", "convert", "eval", "serve", "export-triton"]

_SUMMARIES = {
    "segment": "segment images and write overlays and COCO results",
    "info": "show a model's contract, input, batch range and classes (or the build, without a model)",
    "run": "run a model on a video, camera or image folder",
    "build": "build a TensorRT engine from an ONNX model",
    "export": "export a Hugging Face Mask2Former to ONNX",
    "convert": "rewrite an ONNX model (portable deformable attention, raw head)",
    "eval": "evaluate a model on a COCO dataset",
    "verify": "check that this machine's runners agree with the host reference (run this first on a new device)",
    "serve": "serve a model through Triton Inference Server (HTTP, gRPC, metrics; dynamic batching)",
    "export-triton": "write a Triton model repository: an ensemble of pre/post-processing around the network",
}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _load_command(name: str) -> Tuple[Optional[object], Optional[str]]:
    """(module, None), or (None, why it is unavailable)."""
    module_name = "m2f_edge.commands." + name.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None, "not available in this build"
        return None, "not available: it needs '{}', which is not installed".format(exc.name)
    except ImportError as exc:
        return None, "not available: {}".format(exc)
    if not (hasattr(module, "add_parser") and hasattr(module, "run")):
        return None, "not available: {} lacks add_parser/run".format(module_name)
    return module, None


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="m2f-edge",
        description="Mask2Former instance segmentation (NVIDIA TAO) on Jetson and any other machine.")
    parser.add_argument("--version", action="version", version="m2f-edge " + __version__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output; -vv shows tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module, reason = _load_command(name)
        before = set(subparsers.choices)
        if module is not None:
            module.add_parser(subparsers)
            for added in set(subparsers.choices) - before:
                subparsers.choices[added].set_defaults(_command=module)
        else:
            sub = subparsers.add_parser(name, help="{} ({})".format(_SUMMARIES.get(name, ""), reason),
                                        description="m2f-edge {}: {}".format(name, reason))
            sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            sub.set_defaults(_command=None, _unavailable=reason)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose else logging.INFO)
    logger = logging.getLogger("m2f_edge")
    if not any(getattr(h, "_m2f_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("m2f-edge: %(message)s"))
        handler._m2f_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CLI with argv (default sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and getattr(args, "_command", None) is not None:
            parser.parse_args(argv)  # let argparse report the unrecognised arguments
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if getattr(args, "_command", None) is None:
        print("m2f-edge {}: {}".format(args.command, getattr(args, "_unavailable", "not available")), file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(args.verbose, args.quiet)
    return _run_reporting(lambda: args._command.run(args), "m2f-edge " + args.command, args.verbose >= 2)


def run_script(main: Callable[[], Optional[int]], name: Optional[str] = None) -> int:
    """Run a script's ``main()`` as the CLI runs a command, and return the exit status: an error becomes
    one line on stderr, "NAME: error: MESSAGE", and status 1 (a traceback only when the environment
    variable M2F_EDGE_TRACEBACK is set); Ctrl-C "NAME: interrupted" and status 130. The examples end with
    ``sys.exit(run_script(main))``."""
    name = name or os.path.basename(sys.argv[0] or "m2f-edge")
    return _run_reporting(main, name, bool(os.environ.get("M2F_EDGE_TRACEBACK")))


def _run_reporting(function: Callable[[], Optional[int]], name: str, show_traceback: bool) -> int:
    try:
        status = function()
    except KeyboardInterrupt:
        print("{}: interrupted".format(name), file=sys.stderr)
        return 130
    except Exception as exc:  # every failure becomes one clear line (and a traceback when asked for)
        if show_traceback:
            traceback.print_exc()
        print("{}: error: {}".format(name, _message(exc)), file=sys.stderr)
        return EXIT_FAILURE
    return int(status or 0)


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (KeyError,)) and exc.args:
        text = str(exc.args[0])
    return text


if __name__ == "__main__":
    sys.exit(main())
