"""Builds the Cython fast path; everything else is declared in pyproject.toml.

The source tree keeps the design card's top level (nsmd/, fastpath/, plugins/), but the
installed import names live under the `nsmd` namespace so nothing squats a generic name:
nsmd/fastpath and nsmd/plugins are symlinks to fastpath/ and plugins/, so the source tree
imports exactly as it installs (nsmd.fastpath, nsmd.plugins), also for Cython, which names
compiled modules after their package path.
"""

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup


def extension(path, libraries=()):
    """A Cython module by its path under nsmd/ ("fastpath/engine"), compiled through the
    nsmd/ symlinks, so Cython names it nsmd.fastpath.engine, its installed name: the
    modules import each other's C functions by that name at run time, and plugins cimport
    nsmd.fastpath.stage the same way."""
    return Extension(
        "nsmd." + path.replace("/", "."),
        [f"nsmd/{path}.pyx"],
        libraries=list(libraries),
        extra_compile_args=["-O2", "-Wno-unused-function"],
    )


extensions = [
    extension("fastpath/engine", libraries=["pthread"]),
    extension("fastpath/local"),
    extension("fastpath/forward"),
    extension("fastpath/tunnel_out"),
    extension("fastpath/tunnel_in"),
    extension("fastpath/stage"),
    extension("fastpath/aead", libraries=["crypto", "gcrypt"]),   # the only caller of both
    extension("fastpath/replay"),
    extension("fastpath/offload"),
    extension("fastpath/gro"),
    extension("plugins/flows"),
    extension("plugins/firewall/stage"),
    extension("plugins/nat/stage"),
    extension("plugins/ratelimit/stage"),
    extension("plugins/capture/stage"),
]

setup(
    packages=["nsmd"] + [f"nsmd.{p}" for p in find_packages("nsmd")],
    package_data={"nsmd.fastpath": ["*.pxd", "*.pyi", "includes/*.pxd"],
                  "nsmd.plugins": ["*.pxd"], "nsmd": ["py.typed"]},
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)
