"""Plasticity interventions: resets, regularizers and the triggers that fire them (docs/reference.md §4)."""
