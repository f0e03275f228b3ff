"""otelpg: the OTLP → PostgreSQL sidecar process."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("otelpg")
except PackageNotFoundError:  # running from a source tree that isn't installed
    __version__ = "0.0.0+unknown"
