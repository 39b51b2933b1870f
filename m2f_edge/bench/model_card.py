"""The model card's own speed table (shipped as model_card.json) and matching this machine to it."""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Optional

from ..telemetry.facts import value_of

_DISCRETE_PATTERNS = [
    ("RTX 4090", r"RTX\s*4090"), ("H100", r"\bH100\b"), ("A100", r"\bA100\b"), ("L40", r"\bL40\b"),
    ("L4", r"\bL4\b"), ("A30", r"\bA30\b"), ("A2", r"\bA2\b"), ("T4", r"\bT4\b"),
]

COMPARABILITY_NOTE = ("the model card's number is trtexec timing the network alone (FP16, inference only); "
                      "ours is the whole pipeline (preprocess + inference + post-process to frame-size masks), "
                      "so it is expected to be lower and the two are not the same measurement")


def load_card() -> Dict[str, Any]:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_card.json")) as handle:
        return json.load(handle)


def jetson_device_key(model: str, memory_gib: Optional[float]) -> Optional[str]:
    """'NVIDIA Jetson AGX Orin Developer Kit' + 61.4 GiB -> 'AGX Orin 64GB' (card names)."""
    mem = memory_gib or 0.0
    if "AGX Orin" in model:
        return "AGX Orin 64GB" if mem > 40 else "AGX Orin 32GB"
    if "Orin NX" in model:
        # the card's "Orin 16GB" row is the 16 GB Orin NX module
        return "Orin 16GB" if mem > 10 else "Orin NX 8GB"
    if "Orin Nano" in model:
        return "Orin Nano 8GB" if mem > 5 else "Orin Nano 4GB"
    return None


def gpu_device_key(gpu_name: str) -> Optional[str]:
    for key, pattern in _DISCRETE_PATTERNS:
        if re.search(pattern, gpu_name):
            return key
    return None


def device_key(platform: Dict[str, Any]) -> Optional[str]:
    """This machine's name in the card's table, or None when the card does not list it."""
    jetson = platform.get("jetson")
    memory = value_of(platform.get("host", {}).get("memory_gib"))
    if jetson:
        return jetson_device_key(value_of(jetson.get("board_model"), ""), memory)
    names = []
    nvml = platform.get("nvml") or {}
    if value_of(nvml.get("gpu_name")):
        names.append(value_of(nvml.get("gpu_name")))
    core = value_of(platform.get("host", {}).get("m2f_edge_core"), {}) or {}
    if core.get("gpu_name"):
        names.append(core["gpu_name"])
    for name in names:
        key = gpu_device_key(name)
        if key:
            return key
    return None


def card_entry(device: Optional[str], batch: Optional[int] = None, card: Optional[Dict[str, Any]] = None):
    """The card's row for this device (and batch when given), or None."""
    if device is None:
        return None
    card = card or load_card()
    for entry in card["entries"]:
        if entry["device"] == device and (batch is None or entry["batch"] == batch):
            return dict(entry, precision=card["precision"], tool=card["tool"], scope=card["scope"])
    return None
