"""Desired state, its difference from the live clusters, and views of it (all pure)."""
