"""oj's core and services: everything the CLI and the worker units share."""

__version__ = "0.1.0"
