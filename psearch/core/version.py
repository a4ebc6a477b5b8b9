"""The package version, importable without importing anything else of psearch."""

__version__ = "0.1.0"
