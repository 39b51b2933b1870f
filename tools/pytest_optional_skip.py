"""pytest plugin for machines that lack optional test dependencies (the lent GPU box has no
jsonschema, pycocotools or vermin and cannot install any): a test that fails only because one of
these packages cannot be imported is reported as skipped, naming the package, instead of failed.
Load with `-p pytest_optional_skip` and tools/ on PYTHONPATH (tools/run_gpu_suite.sh does)."""

import pytest

OPTIONAL = ("jsonschema", "pycocotools", "vermin", "matplotlib", "transformers", "scipy", "cupy", "torch")


def _missing_optional(exc):
    if not isinstance(exc, ModuleNotFoundError):
        return None
    name = (getattr(exc, "name", None) or "").split(".")[0]
    return name if name in OPTIONAL else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is None or call.when not in ("setup", "call"):
        return
    name = _missing_optional(call.excinfo.value)
    if name:
        report.outcome = "skipped"
        report.longrepr = (str(item.fspath), item.location[1] or 0,
                           "Skipped: optional package '{}' is not installed here".format(name))
