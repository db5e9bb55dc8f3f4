"""Lightweight adapter strategy (import from the module files; this package file stays empty)."""
