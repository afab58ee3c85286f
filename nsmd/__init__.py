"""nsmd: Network Service Mesh for Linux hosts."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nsmd")  # pyproject.toml's, as installed: the one place it is set
except PackageNotFoundError:  # a source tree used without installing it
    __version__ = "0+unknown"
