"""`yr.affinity`: where yr code imports the affinity types from."""

from .core.affinity import Affinity, AffinityKind, AffinityScope, AffinityType, LabelOperator, OperatorType

__all__ = ["Affinity", "AffinityKind", "AffinityScope", "AffinityType", "LabelOperator", "OperatorType"]
