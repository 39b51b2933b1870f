"""A friendlier TypeError for a misspelt or foreign keyword argument.

Users arrive with other libraries' names (Ultralytics' ``conf``, the CLI's ``--threshold``); Python's own
"unexpected keyword argument" names only the wrong word. :func:`suggest_keywords` wraps a function so that
the error also names the keyword it most likely meant.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Dict, Optional

# other libraries' and the CLI's names for the same settings
COMMON_ALIASES = {
    "threshold": "score_threshold",
    "conf": "score_threshold",
    "confidence": "score_threshold",
    "score_thresh": "score_threshold",
    "max_det": "max_instances",
    "max_detections": "max_instances",
    "device": "backend",
    "classes": "class_names",
    "names": "class_names",
    "model_path": "model",
}


def suggest_keywords(aliases: Optional[Dict[str, str]] = None):
    """Decorator: an unknown keyword argument raises a TypeError naming the keyword meant (from
    ``aliases``, else the closest accepted name), before the wrapped function runs."""
    table = dict(COMMON_ALIASES if aliases is None else aliases)

    def decorate(function):
        parameters = inspect.signature(function).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            raise TypeError("suggest_keywords: {} takes **kwargs; every keyword is accepted".format(
                function.__qualname__))
        accepted = [name for name, p in parameters.items()
                    if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
                    and name != "self"]

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            for name in kwargs:
                if name not in accepted:
                    raise TypeError(_message(function, name, accepted, table))
            return function(*args, **kwargs)

        return wrapper

    return decorate


def _message(function, name: str, accepted, aliases: Dict[str, str]) -> str:
    owner = function.__qualname__.replace(".__init__", "")
    meant = aliases.get(name) if aliases.get(name) in accepted else None
    containing = [a for a in accepted if name in a]
    if meant is None and len(containing) == 1:  # a shortened name: thresh -> score_threshold
        meant = containing[0]
    if meant is None:
        close = difflib.get_close_matches(name, accepted, n=1, cutoff=0.6)
        meant = close[0] if close else None
    text = "{}() got an unexpected keyword argument '{}'".format(owner, name)
    if meant is not None:
        return text + "; did you mean {}=?".format(meant)
    return text + " (it accepts: {})".format(", ".join(accepted))
