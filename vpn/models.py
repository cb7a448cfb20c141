"""Models of this package (none yet)."""
