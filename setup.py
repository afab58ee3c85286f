"""Builds the Cython fast path; everything else is declared in pyproject.toml.

The source tree keeps the design card's top level (nsmd/, fastpath/, plugins/), but the
installed import names live under the `nsmd` namespace so nothing squats a generic name:
fastpath/ installs as nsmd.fastpath and plugins/ as nsmd.plugins.
"""

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

PACKAGE_DIRS = {"nsmd": "nsmd", "nsmd.fastpath": "fastpath", "nsmd.plugins": "plugins"}


def packages():
    found = []
    for prefix, directory in PACKAGE_DIRS.items():
        found.append(prefix)
        found += [f"{prefix}.{p}" for p in find_packages(directory)]
    return found


def package_dirs():
    dirs = dict(PACKAGE_DIRS)
    for prefix, directory in PACKAGE_DIRS.items():
        for sub in find_packages(directory):
            dirs[f"{prefix}.{sub}"] = f"{directory}/{sub.replace('.', '/')}"
    return dirs


def fastpath_extension(module, libraries=()):
    # Cython resolves cimports from the module's dotted name, so it compiles the module as
    # `fastpath.X` (where the .pxd files are); the built library installs as nsmd.fastpath.X.
    return Extension(
        f"fastpath.{module}",
        [f"fastpath/{module}.pyx"],
        libraries=list(libraries),
        extra_compile_args=["-O2", "-Wno-unused-function"],
    )


extensions = [
    fastpath_extension("engine", libraries=["pthread", "crypto"]),
    fastpath_extension("aead", libraries=["crypto"]),
    fastpath_extension("replay"),
    fastpath_extension("offload"),
    fastpath_extension("gro"),
]

def installed_as_nsmd(built):
    for ext in built:
        ext.name = "nsmd." + ext.name
    return built


setup(
    packages=packages(),
    package_dir=package_dirs(),
    package_data={"nsmd.fastpath": ["*.pxd", "*.pyi", "includes/*.pxd"], "nsmd": ["py.typed"]},
    ext_modules=installed_as_nsmd(
        cythonize(
            extensions,
            compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        )
    ),
)
