"""Makes this checkout's `d4c` importable in tests without installing it."""
