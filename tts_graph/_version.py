"""The package version, in a module of its own so that any module can read it without
importing ``tts_graph`` itself (whose ``__init__`` imports the whole public API)."""

__version__ = "0.1.0"
