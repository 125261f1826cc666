"""The package version, in one place (the package root and checkpoint cards read it)."""
__version__ = "0.1.0"
