"""PEFM monitor as a kn func Python function: a thin shell around pefm.serving."""

from pefm.serving.function import ServiceFunction


def new() -> ServiceFunction:
    """Called once by the func-python runtime to create the function instance."""
    return ServiceFunction("monitor")
