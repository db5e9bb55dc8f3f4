"""Triple-modal (EventBind/E-CLIP) strategy (import from the module files; this package file stays empty)."""
