"""For tests that start Python subprocesses: the child must import the same m2f_edge as the test
process (the installed package in CI, the source tree with its in-place build in development), never
a source tree without its built core."""

import os

import m2f_edge

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(m2f_edge.__file__)))


def subprocess_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


# `python -m` puts its working directory first on sys.path, ahead of PYTHONPATH: start children in the
# folder that holds the package under test, so a checkout's source tree cannot shadow it.
SUBPROCESS_CWD = PACKAGE_PARENT
