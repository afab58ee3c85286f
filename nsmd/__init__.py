"""nsmd: Network Service Mesh for Linux hosts."""
__version__ = "0.1.0"
