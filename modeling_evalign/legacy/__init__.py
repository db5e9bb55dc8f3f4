"""Models converted from the brief's legacy ``.pt`` checkpoints (import from the module files)."""
