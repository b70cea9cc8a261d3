"""sbrbench: honest, comparable, fast benchmarking of session-based recommendation."""

__version__ = "0.1.0"

__all__ = ["__version__"]
