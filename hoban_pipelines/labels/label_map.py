"""From CVAT labels (and their attributes) to the project's classes.

A label map is a small YAML/JSON mapping, for example::

    classes: [person_with_helmet, person_without_helmet]
    labels:
      person_with_helmet: person_with_helmet          # label -> class
      person_without_helmet: person_without_helmet
      head:                                           # label + attribute -> class
        attribute: has_safety_helmet
        values: {"yes": person_with_helmet, "no": person_without_helmet}
    ignore: [vehicle, fallen]                          # labels dropped on purpose

Any label that is neither mapped nor ignored is an error listing every label found, so a new
label in a labelling round is never silently lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml


class LabelMapError(ValueError):
    """A label map that is malformed, or labels it does not cover."""


@dataclass(frozen=True)
class AttributeRule:
    attribute: str
    values: dict[str, str]


@dataclass(frozen=True)
class LabelMap:
    classes: list[str]
    labels: dict[str, str | AttributeRule]
    ignore: frozenset[str] = field(default_factory=frozenset)
    source: str = "built-in identity map"

    @classmethod
    def identity(cls, classes: list[str]) -> "LabelMap":
        """Each class is also the CVAT label's name, as in the team's exports."""
        return cls(classes=list(classes), labels={name: name for name in classes})

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str, default_classes: list[str]) -> "LabelMap":
        if not isinstance(raw, dict) or not isinstance(raw.get("labels"), dict):
            raise LabelMapError(f"{source}: a label map needs a 'labels' mapping of CVAT label -> class")
        classes = list(raw.get("classes") or default_classes)
        labels: dict[str, str | AttributeRule] = {}
        for label, target in raw["labels"].items():
            if isinstance(target, str):
                labels[str(label)] = target
            elif isinstance(target, dict) and {"attribute", "values"} <= set(target):
                labels[str(label)] = AttributeRule(
                    str(target["attribute"]), {str(k): str(v) for k, v in target["values"].items()}
                )
            else:
                raise LabelMapError(
                    f"{source}: label '{label}' must map to a class name or to {{attribute: NAME, values: {{VALUE: CLASS}}}}"
                )
        targets = {t for t in labels.values() if isinstance(t, str)} | {
            c for t in labels.values() if isinstance(t, AttributeRule) for c in t.values.values()
        }
        unknown = sorted(targets - set(classes))
        if unknown:
            raise LabelMapError(f"{source}: maps to unknown class(es) {unknown}; classes are {classes}")
        return cls(classes=classes, labels=labels, ignore=frozenset(map(str, raw.get("ignore") or [])), source=source)

    @classmethod
    def load(cls, path: Path, default_classes: list[str]) -> "LabelMap":
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise LabelMapError(f"cannot read label map {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise LabelMapError(f"label map {path} is not valid YAML: {exc}") from None
        return cls.from_dict(raw, str(path), default_classes)

    @classmethod
    def for_settings(cls, settings) -> "LabelMap":
        """The map the ``label_map`` setting names, or the identity map over ``classes``."""
        if settings.label_map:
            return cls.load(settings.require("label_map", "label map file", file=True), settings.classes)
        return cls.identity(settings.classes)

    def check_covers(self, found: Iterable[str], where: str) -> None:
        """Raise if a label that yields boxes is neither mapped nor ignored."""
        found = sorted(set(found))
        missing = [label for label in found if label not in self.labels and label not in self.ignore]
        if missing:
            raise LabelMapError(
                f"{where}: label(s) {missing} are not in the label map ({self.source}). Labels found: {found}. "
                "Map them to a class or list them under 'ignore'."
            )

    def class_of(self, label: str, attributes: dict[str, str]) -> int | None:
        """The class index of a box, or None for an ignored label."""
        if label in self.ignore:
            return None
        target = self.labels.get(label)
        if target is None:
            raise LabelMapError(f"label '{label}' is not in the label map ({self.source})")
        if isinstance(target, AttributeRule):
            value = attributes.get(target.attribute)
            if value not in target.values:
                raise LabelMapError(
                    f"label '{label}' has {target.attribute}={value!r}; the label map ({self.source}) "
                    f"knows {sorted(target.values)}"
                )
            target = target.values[value]
        return self.classes.index(target)
