"""The package version, in a leaf module so other modules need not import the package face."""

__version__ = "0.1.0"
