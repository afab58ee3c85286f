"""Builds the Cython fast path; everything else is declared in pyproject.toml.

The source tree keeps the design card's top level (nsmd/, fastpath/, plugins/), but the
installed import names live under the `nsmd` namespace so nothing squats a generic name:
nsmd/fastpath and nsmd/plugins are symlinks to fastpath/ and plugins/, so the source tree
imports exactly as it installs (nsmd.fastpath, nsmd.plugins), also for Cython, which names
compiled modules after their package path.
"""

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup


def fastpath_extension(module, libraries=()):
    # Compiled through nsmd/fastpath (a symlink to fastpath/), so Cython names each module
    # nsmd.fastpath.X, its installed name: the modules import each other's C functions by
    # that name at run time, and plugins cimport nsmd.fastpath.stage the same way.
    return Extension(
        f"nsmd.fastpath.{module}",
        [f"nsmd/fastpath/{module}.pyx"],
        libraries=list(libraries),
        extra_compile_args=["-O2", "-Wno-unused-function"],
    )


extensions = [
    fastpath_extension("engine", libraries=["pthread", "crypto"]),
    fastpath_extension("local"),
    fastpath_extension("tunnel_out", libraries=["crypto"]),
    fastpath_extension("tunnel_in", libraries=["crypto"]),
    fastpath_extension("stage"),
    fastpath_extension("aead", libraries=["crypto"]),
    fastpath_extension("replay"),
    fastpath_extension("offload"),
    fastpath_extension("gro"),
]

setup(
    packages=["nsmd"] + [f"nsmd.{p}" for p in find_packages("nsmd")],
    package_data={"nsmd.fastpath": ["*.pxd", "*.pyi", "includes/*.pxd"], "nsmd": ["py.typed"]},
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)
