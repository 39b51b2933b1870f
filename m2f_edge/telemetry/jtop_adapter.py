"""jetson-stats (``jtop``) as an optional telemetry source.

jetson-stats is AGPL and talks to its own systemd service (``jtop.service``); it is an optional
runtime extra (``pip install m2f-edge[jetson]``), never imported by the rest of the package. When
it is missing or its service does not answer, the caller falls back to reading sysfs directly
(:mod:`m2f_edge.telemetry.jetson`), and :attr:`JtopSource.reason` says why.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from .facts import fact

INSTALL_HINT = "pip install 'm2f-edge[jetson]' (jetson-stats; then `sudo systemctl restart jtop.service`)"


class JtopSource(object):
    """An open connection to the jtop service, or the reason there is none."""

    name = "jtop"

    def __init__(self, interval: float = 0.5):
        self.reason = None  # type: Optional[str]
        self._jetson = None
        try:
            import jtop as jtop_module  # noqa: F401  (optional, AGPL)
        except ImportError:
            self.reason = "jetson-stats is not installed: " + INSTALL_HINT
            return
        try:
            jetson = jtop_module.jtop(interval=interval)
            jetson.start()
            if hasattr(jetson, "ok") and not jetson.ok():
                raise RuntimeError("jtop answered but reports no data")
        except Exception as error:  # JtopException and anything else from its socket
            self.reason = "jtop service did not answer ({}); `sudo systemctl restart jtop.service`".format(
                str(error).strip() or type(error).__name__)
            return
        self._jetson = jetson

    @property
    def available(self) -> bool:
        return self._jetson is not None

    def close(self) -> None:
        if self._jetson is not None:
            try:
                self._jetson.close()
            except Exception:
                pass
            self._jetson = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read_power(self) -> Tuple[Optional[float], Dict[str, float]]:
        """(total watts, {rail: watts}) from ``jetson.power`` (milliwatts there)."""
        if self._jetson is None:
            return None, {}
        power = self._jetson.power or {}
        rails = {}
        for label, values in (power.get("rail") or {}).items():
            if isinstance(values, dict) and values.get("power") is not None:
                rails[label] = float(values["power"]) / 1000.0
        total = (power.get("tot") or {}).get("power")
        return (None if total is None else float(total) / 1000.0), rails

    def facts(self) -> Dict[str, Any]:
        """Board, release, power mode and clocks as jtop reports them."""
        if self._jetson is None:
            return {}
        out = {}
        hardware = (getattr(self._jetson, "board", None) or {}).get("hardware", {})
        if hardware.get("Model"):
            out["board_model"] = fact(hardware["Model"], "jtop")
        if hardware.get("L4T"):
            out["l4t"] = fact(str(hardware["L4T"]), "jtop")
        if hardware.get("Jetpack"):
            out["jetpack"] = fact(str(hardware["Jetpack"]), "jtop")
        nvpmodel = getattr(self._jetson, "nvpmodel", None)
        if nvpmodel is not None:
            out["power_mode"] = fact({"id": getattr(nvpmodel, "id", None),
                                      "name": getattr(nvpmodel, "name", str(nvpmodel))}, "jtop")
        clocks = getattr(self._jetson, "jetson_clocks", None)
        if clocks is not None:
            out["jetson_clocks"] = fact(bool(clocks), "jtop")
        total, rails = self.read_power()
        if rails or total is not None:
            out["power"] = fact({"total_w": total, "total_source": "jtop tot", "rails_w": rails}, "jtop")
        return out
