"""Model settings from a TAO experiment spec, a JSON sidecar next to the model, or the model's metadata.

A TAO Mask2Former experiment spec (YAML, or JSON as the FTMS client writes it) gives:

    model.mode                          "instance" | "panoptic" | "semantic" (recorded; m2f_edge runs instances)
    model.object_mask_threshold         -> score_threshold (TAO default 0.4)
    model.overlap_threshold             recorded (panoptic merging; not used for instances)
    model.test_topk_per_image           -> topk (raw-head models; TAO default 100)
    model.sem_seg_head.num_classes      -> num_classes
    dataset.pixel_mean / pixel_std      -> mean / std; TAO writes them in 0-255 ([123.675, ...]) or 0-1
                                           ([0.485, ...]) units: values above 1 are read as 0-255 and divided
    dataset.label_map                   -> class_names and category_ids (forms below)
    dataset.contiguous_id               how label_map ids become class indices (TAO default False)

(`data:` is accepted in place of `dataset:`.)

A JSON sidecar `<model>.json` (`model.json` or `model.onnx.json` next to `model.onnx`) is read
automatically; its keys: class_names, mean, std, score_threshold, no_object_index, topk, num_classes,
label_map. Unknown keys are ignored with a log message; a JSON file without any of these keys (an engine
cache record, say) is not a sidecar and is skipped.

label_map may be any of:
  - a path to a JSON or YAML file holding one of the forms below (relative paths are taken from the spec's
    folder). TAO's own form is a JSON list of {"id": 1, "name": "person", "color": [...], "isthing": 1};
  - a list of {"id": int, "name": str} dicts ("category_id" / "label" / "class" also accepted), or a COCO
    annotation file's {"categories": [...]};
  - a list of names (class index k -> category id k+1);
  - a dict {id: name} or {name: id}.
With contiguous_id False (TAO's default) class index k is the category with id k+1, and missing ids are
named "class_<k>"; with contiguous_id True class index k is the k-th entry and keeps its own id.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

SIDECAR_KEYS = ("class_names", "mean", "std", "score_threshold", "no_object_index", "topk", "num_classes",
                "label_map", "contiguous_id")
METADATA_PREFIX = "m2f_edge."


class SpecError(ValueError):
    """A spec, sidecar or label map that cannot be read; the message names the file and the key."""


@dataclass
class Spec:
    """Settings for a model; None = not given here. mean/std are in 0-1 units, RGB order.

    class_names[k] and category_ids[k] belong to model class index k (the label Instances report).
    """

    class_names: Optional[List[str]] = None
    category_ids: Optional[List[int]] = None
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None
    score_threshold: Optional[float] = None
    no_object_index: Optional[int] = None
    topk: Optional[int] = None
    num_classes: Optional[int] = None
    mode: Optional[str] = None
    overlap_threshold: Optional[float] = None
    sources: List[str] = field(default_factory=list)

    def over(self, base: "Spec") -> "Spec":
        """This spec's values where given, else base's."""
        merged = {}
        for f in fields(self):
            if f.name == "sources":
                continue
            mine = getattr(self, f.name)
            merged[f.name] = mine if mine is not None else getattr(base, f.name)
        return Spec(sources=list(self.sources) + [s for s in base.sources if s not in self.sources], **merged)

    def as_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --- reading files ---------------------------------------------------------------------------------------------

def _read_document(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError("spec: no such file: '{}'".format(path))
    with open(path, "r", encoding="utf-8") as handle:
        text = handle.read()
    if path.lower().endswith(".json"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise SpecError("{}: not valid JSON: {}".format(path, exc)) from exc
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError("{}: not valid YAML: {}".format(path, exc)) from exc


def load_spec(path) -> Spec:
    """Read a TAO experiment spec (YAML/JSON with `model:` / `dataset:` sections) or a JSON sidecar."""
    path = os.fspath(path)
    doc = _read_document(path)
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise SpecError("{}: expected a mapping at the top level, got {}".format(path, type(doc).__name__))
    if any(key in doc for key in ("model", "dataset", "data")):
        return _from_tao(doc, path)
    return _from_sidecar(doc, path)


def _section(doc: Mapping, key: str, path: str) -> Mapping:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError("{}: '{}' must be a mapping, got {}".format(path, key, type(value).__name__))
    return value


def _from_tao(doc: Mapping, path: str) -> Spec:
    model = _section(doc, "model", path)
    dataset = _section(doc, "dataset", path) or _section(doc, "data", path)
    head = _section(model, "sem_seg_head", path)
    spec = Spec(sources=[path])
    spec.mode = _optional(model, "mode", str, path, "model.")
    spec.score_threshold = _optional_float(model, "object_mask_threshold", path, "model.", 0.0, 1.0)
    spec.overlap_threshold = _optional_float(model, "overlap_threshold", path, "model.", 0.0, 1.0)
    spec.topk = _optional_positive_int(model, "test_topk_per_image", path, "model.")
    spec.num_classes = _optional_positive_int(head, "num_classes", path, "model.sem_seg_head.")
    spec.mean = _normalisation(dataset.get("pixel_mean"), "dataset.pixel_mean", path, allow_zero=True)
    spec.std = _normalisation(dataset.get("pixel_std"), "dataset.pixel_std", path, allow_zero=False)
    if spec.mode is not None and spec.mode.lower() != "instance":
        logger.info("%s: model.mode is '%s'; m2f_edge reports instances from the same outputs", path, spec.mode)
    label_map = dataset.get("label_map")
    if label_map not in (None, ""):
        contiguous = bool(dataset.get("contiguous_id", False))
        names_ids = _label_map(label_map, contiguous, spec.num_classes, path, "dataset.label_map")
        if names_ids is not None:
            spec.class_names, spec.category_ids = names_ids
    return spec


def _from_sidecar(doc: Mapping, path: str) -> Spec:
    unknown = [k for k in doc if k not in SIDECAR_KEYS]
    if unknown:
        logger.info("%s: ignoring keys %s (known: %s)", path, unknown, list(SIDECAR_KEYS))
    spec = Spec(sources=[path])
    spec.score_threshold = _optional_float(doc, "score_threshold", path, "", 0.0, 1.0)
    spec.no_object_index = _optional(doc, "no_object_index", int, path, "")
    spec.topk = _optional_positive_int(doc, "topk", path, "")
    spec.num_classes = _optional_positive_int(doc, "num_classes", path, "")
    spec.mean = _normalisation(doc.get("mean"), "mean", path, allow_zero=True)
    spec.std = _normalisation(doc.get("std"), "std", path, allow_zero=False)
    if doc.get("label_map") is not None:
        names_ids = _label_map(doc["label_map"], bool(doc.get("contiguous_id", False)), spec.num_classes, path,
                               "label_map")
        if names_ids is not None:
            spec.class_names, spec.category_ids = names_ids
    if doc.get("class_names") is not None:
        spec.class_names = _names(doc["class_names"], path, "class_names")
    return spec


def find_sidecar(model_path) -> Optional[str]:
    """The sidecar JSON next to a model (`model.json`, then `model.onnx.json`) that holds sidecar keys."""
    model_path = os.fspath(model_path)
    for candidate in (os.path.splitext(model_path)[0] + ".json", model_path + ".json"):
        if not os.path.isfile(candidate):
            continue
        try:
            with open(candidate, "r", encoding="utf-8") as handle:
                doc = json.load(handle)
        except ValueError as exc:
            raise SpecError("{}: sidecar of {} is not valid JSON: {}".format(candidate, model_path, exc)) from exc
        if isinstance(doc, Mapping) and any(k in doc for k in SIDECAR_KEYS):
            return candidate
        logger.debug("%s holds no m2f_edge sidecar keys; not read as a sidecar", candidate)
    return None


def load_sidecar(model_path) -> Spec:
    """The sidecar next to a model as a Spec (empty when there is none).

    A TensorRT engine loses its ONNX's metadata; an engine-cache record `<engine>.json` that carries it
    under "model_metadata" ({"m2f_edge.no_object_index": "-1", ...}) fills in below the sidecar.
    """
    found = find_sidecar(model_path)
    spec = load_spec(found) if found else Spec()
    record_path = os.fspath(model_path) + ".json"
    if record_path != found and os.path.isfile(record_path):
        try:
            with open(record_path, "r", encoding="utf-8") as handle:
                record = json.load(handle)
        except ValueError:
            record = None
        if isinstance(record, Mapping) and isinstance(record.get("model_metadata"), Mapping):
            spec = spec.over(from_metadata(record["model_metadata"], record_path))
    return spec


def from_metadata(metadata: Mapping[str, str], source: str = "model metadata") -> Spec:
    """Settings stored in the model itself under keys "m2f_edge.<sidecar key>" (values JSON or plain text)."""
    doc = {}
    for key, value in metadata.items():
        if not key.startswith(METADATA_PREFIX):
            continue
        name = key[len(METADATA_PREFIX):]
        if name not in SIDECAR_KEYS:
            continue
        try:
            doc[name] = json.loads(value)
        except ValueError:
            doc[name] = value
    if not doc:
        return Spec()
    return _from_sidecar(doc, source)


def coerce_spec(spec) -> Spec:
    """A Spec from what the Segmenter's `spec` argument accepts: None, a path, a dict (sidecar keys or a TAO
    spec document) or a Spec."""
    if spec is None:
        return Spec()
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return load_spec(spec)
    if isinstance(spec, Mapping):
        if any(key in spec for key in ("model", "dataset", "data")):
            return _from_tao(spec, "spec")
        return _from_sidecar(spec, "spec")
    raise TypeError("spec: expected a path, a dict or a Spec, got {}".format(type(spec).__name__))


# --- values ----------------------------------------------------------------------------------------------------

def _optional(doc: Mapping, key: str, kind, path: str, prefix: str):
    value = doc.get(key)
    if value is None:
        return None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise SpecError("{}: {}{} must be an integer, got {!r}".format(path, prefix, key, value))
    if kind is str and not isinstance(value, str):
        raise SpecError("{}: {}{} must be a string, got {!r}".format(path, prefix, key, value))
    return value


def _optional_float(doc, key, path, prefix, low, high) -> Optional[float]:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= float(value) <= high):
        raise SpecError("{}: {}{} must be a number in [{}, {}], got {!r}".format(path, prefix, key, low, high, value))
    return float(value)


def _optional_positive_int(doc, key, path, prefix) -> Optional[int]:
    value = _optional(doc, key, int, path, prefix)
    if value is not None and value <= 0:
        raise SpecError("{}: {}{} must be positive, got {}".format(path, prefix, key, value))
    return value


def _normalisation(value, key: str, path: str, allow_zero: bool) -> Optional[Tuple[float, float, float]]:
    """Three numbers in 0-1 units; TAO's 0-255 values (any above 1) are divided by 255."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        raise SpecError("{}: {} must be 3 numbers (RGB), got {!r}".format(path, key, value)) from None
    if len(numbers) != 3:
        raise SpecError("{}: {} must be 3 numbers (RGB), got {}".format(path, key, len(numbers)))
    if any(v < 0 or (v == 0 and not allow_zero) for v in numbers):
        raise SpecError("{}: {} must be {}, got {}".format(path, key, "non-negative" if allow_zero else "positive",
                                                            numbers))
    if max(numbers) > 1.0:
        numbers = [v / 255.0 for v in numbers]
    return (numbers[0], numbers[1], numbers[2])


def _names(value, path: str, key: str) -> List[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise SpecError("{}: {} must be a list of strings, got {!r}".format(path, key, value))
    return list(value)


_ID_KEYS = ("id", "category_id", "label_id", "class_id")
_NAME_KEYS = ("name", "label", "class", "category", "class_name")


def _label_map(value, contiguous: bool, num_classes: Optional[int], path: str,
               key: str) -> Optional[Tuple[List[str], List[int]]]:
    """(class_names, category_ids) indexed by model class, from any accepted label-map form."""
    if isinstance(value, str):
        map_path = value if os.path.isabs(value) else os.path.join(os.path.dirname(os.path.abspath(path)), value)
        if not os.path.isfile(map_path):
            logger.warning("%s: %s file '%s' not found; class names fall back to the defaults", path, key, value)
            return None
        return _label_map(_read_document(map_path), contiguous, num_classes, map_path, "label map")
    if isinstance(value, Mapping) and "categories" in value:
        value = value["categories"]
    entries = []  # (category id, name) in file order
    if isinstance(value, Mapping):
        for k, v in value.items():
            if _is_int_like(k) and isinstance(v, str):
                entries.append((int(k), v))
            elif isinstance(k, str) and _is_int_like(v):
                entries.append((int(v), k))
            else:
                raise SpecError("{}: {} entry {!r}: {!r} is neither id: name nor name: id".format(path, key, k, v))
        entries.sort()
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if all(isinstance(v, str) for v in value):
            return list(value), list(range(1, len(value) + 1))
        for position, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise SpecError("{}: {}[{}] must be a {{id, name}} mapping or a name, got {!r}".format(
                    path, key, position, item))
            cid = next((item[k] for k in _ID_KEYS if k in item), None)
            name = next((item[k] for k in _NAME_KEYS if k in item), None)
            if not _is_int_like(cid) or not isinstance(name, str):
                raise SpecError("{}: {}[{}] needs an integer id ({}) and a name ({}), got {!r}".format(
                    path, key, position, "/".join(_ID_KEYS), "/".join(_NAME_KEYS), item))
            entries.append((int(cid), name))
    else:
        raise SpecError("{}: {} must be a path, a list or a mapping, got {!r}".format(path, key, value))
    if not entries:
        return None
    if contiguous:
        return [name for _, name in entries], [cid for cid, _ in entries]
    if any(cid < 1 for cid, _ in entries):
        raise SpecError("{}: {} ids must be >= 1 (TAO: category ids start at 1), got {}".format(
            path, key, sorted(cid for cid, _ in entries)[:5]))
    count = max(max(cid for cid, _ in entries), num_classes or 0)
    names = ["class_{}".format(k) for k in range(count)]
    for cid, name in entries:
        names[cid - 1] = name
    return names, list(range(1, count + 1))


def _is_int_like(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


__all__ = ["Spec", "SpecError", "load_spec", "load_sidecar", "find_sidecar", "from_metadata", "coerce_spec"]
