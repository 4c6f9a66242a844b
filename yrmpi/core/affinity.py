"""The SDK's affinity types (`yr.Affinity`, `yr.LabelOperator`, ...) and their wire form.

An `Affinity` is a kind (RESOURCE: labels of the rank and its node; INSTANCE: labels of the
instances already there), a type (REQUIRED, REQUIRED_ANTI, PREFERRED, PREFERRED_ANTI) and a
list of label operators that must all hold. The scheduler matches them (scheduling/affinity.py);
they travel to it as plain tuples (`to_wire`).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from .errors import YRTypeError, YRValueError


class AffinityKind(Enum):
    RESOURCE = "RESOURCE"  # the rank's labels: hostname, node, rank, partition, user labels
    INSTANCE = "INSTANCE"  # the labels (InvokeOptions.labels) of instances placed there


class AffinityType(Enum):
    PREFERRED = "PREFERRED"
    PREFERRED_ANTI = "PREFERRED_ANTI"
    REQUIRED = "REQUIRED"
    REQUIRED_ANTI = "REQUIRED_ANTI"


class AffinityScope(Enum):
    POD = "POD"  # the same rank
    NODE = "NODE"  # the same node


class OperatorType(Enum):
    LABEL_IN = "LABEL_IN"
    LABEL_NOT_IN = "LABEL_NOT_IN"
    LABEL_EXISTS = "LABEL_EXISTS"
    LABEL_NOT_EXISTS = "LABEL_NOT_EXISTS"


class LabelOperator:
    """One condition on a label: `key` in / not in `values`, or (not) present."""

    def __init__(self, operator_type: OperatorType, key: str, values: list[str] | None = None) -> None:
        if not isinstance(operator_type, OperatorType):
            raise YRTypeError(f"LabelOperator takes a yr.OperatorType, got {operator_type!r}")
        if not isinstance(key, str) or not key:
            raise YRValueError(f"a label key must be a non-empty str, got {key!r}")
        self.operator_type = operator_type
        self.key = key
        self.values = [str(v) for v in (values or [])]
        if operator_type in (OperatorType.LABEL_IN, OperatorType.LABEL_NOT_IN) and not self.values:
            raise YRValueError(f"{operator_type.name} on {key!r} needs values")

    def __repr__(self) -> str:
        return f"LabelOperator({self.operator_type.name}, {self.key!r}, {self.values!r})"


class Affinity:
    def __init__(self, affinity_kind: AffinityKind, affinity_type: AffinityType,
                 label_operators: list[LabelOperator], affinity_scope: AffinityScope | None = None) -> None:
        if not isinstance(affinity_kind, AffinityKind) or not isinstance(affinity_type, AffinityType):
            raise YRTypeError("Affinity takes a yr.AffinityKind and a yr.AffinityType")
        if not label_operators or not all(isinstance(op, LabelOperator) for op in label_operators):
            raise YRValueError("Affinity needs a non-empty list of yr.LabelOperator")
        self.affinity_kind = affinity_kind
        self.affinity_type = affinity_type
        self.label_operators = list(label_operators)
        self.affinity_scope = affinity_scope

    def __repr__(self) -> str:
        return f"Affinity({self.affinity_kind.name}, {self.affinity_type.name}, {self.label_operators!r})"


def to_wire(affinities: Any) -> tuple:
    """((kind, type, scope, ((operator, key, values), ...)), ...) for the scheduler."""
    out = []
    for aff in affinities or ():
        if not isinstance(aff, Affinity):
            raise YRTypeError(f"InvokeOptions.schedule_affinities takes yr.Affinity objects, got {aff!r}")
        scope = (aff.affinity_scope or AffinityScope.POD).value
        ops = tuple((op.operator_type.value, op.key, tuple(op.values)) for op in aff.label_operators)
        out.append((aff.affinity_kind.value, aff.affinity_type.value, scope, ops))
    return tuple(out)
