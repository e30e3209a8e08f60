"""Plasticity interventions: resets, regularizers and the triggers that fire them (REFERENCE.md §4)."""
