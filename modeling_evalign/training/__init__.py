"""Accelerate training of the alignment strategies (import from the module files: config, loop, checkpointing, data)."""
