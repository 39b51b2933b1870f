"""Writing outputs safely.

Never destroy an input: the paths a command is about to write are checked against the files it reads,
and against one another, before anything is written.

Two paths name the same file when they resolve to the same real path (symlinks, ``..``, case on
case-insensitive systems), or when both exist and ``os.path.samefile`` says so (hard links).
"""

from __future__ import annotations

import os
import uuid
from typing import Iterable, List, Optional, Tuple

Labelled = Tuple[str, str]  # (what it is, e.g. "--json", path)


class OutputWouldReplaceInput(FileExistsError):
    """An output path names a file the command reads (or another output of the same run)."""


def same_file(first: str, second: str) -> bool:
    """Whether two paths name one file, existing or not."""
    if _real(first) == _real(second):
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist (yet): the real paths decided
        return False


def refuse_replacing(outputs: Iterable[Labelled], inputs: Iterable[Labelled]) -> None:
    """Raise :class:`OutputWouldReplaceInput`, naming both paths, when an output would replace an input
    or two outputs would replace each other."""
    inputs = [(what, path) for what, path in inputs if path]
    checked: List[Labelled] = []
    for what, path in outputs:
        if not path:
            continue
        clash = _first_same(path, inputs)
        if clash is not None:
            raise OutputWouldReplaceInput(
                "{}: writing {} would replace {} {}; nothing was written (choose another output path)".format(
                    what, path, clash[0], clash[1]))
        clash = _first_same(path, checked)
        if clash is not None:
            raise OutputWouldReplaceInput(
                "{}: writing {} would replace {} {}, written by the same run; nothing was written (choose "
                "another output path)".format(what, path, clash[0], clash[1]))
        checked.append((what, path))


def _first_same(path: str, candidates: List[Labelled]) -> Optional[Labelled]:
    return next(((what, other) for what, other in candidates if same_file(path, other)), None)


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(os.path.abspath(os.fspath(path))))


def create_hidden_beside(path: str, suffix: str = "") -> str:
    """Create an empty, hidden, uniquely named file in ``path``'s folder and return its path: the
    temporary file an output is written to before it is renamed to ``path``.

    Unlike tempfile.mkstemp (mode 0600, kept by the rename), the file is created with mode 0666 less the
    user's umask, so the finished output has the mode any other file the user makes would have."""
    folder = os.path.dirname(os.path.abspath(path))
    for _ in range(100):
        candidate = os.path.join(folder, ".{}.{}{}".format(os.path.basename(path), uuid.uuid4().hex[:12], suffix))
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError("could not create a temporary file beside {}".format(path))
