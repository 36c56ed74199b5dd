"""Cluster 'rewriting' of the FLAN-style mixture (see sftlab.builtin.flan.base for how families are written)."""

from __future__ import annotations

from sftlab.builtin.flan.base import Family

CLUSTER = "rewriting"
HELDOUT_FAMILY: str | None = None  # the family of this cluster never trained (seen clusters only)
FAMILIES: tuple[Family, ...] = ()
