"""Small shared helpers: atomic writes (``io_utils``), lazy exports and module aliases
(``lazy_exports``), log-friendly progress bars (``progress``)."""
