"""Compiles the plugin's stage against nsmd's stage ABI (nsmd.fastpath.get_include())."""

from Cython.Build import cythonize
from setuptools import Extension, setup

import nsmd.fastpath

setup(ext_modules=cythonize(
    [Extension("nsmd_marker.stage", ["nsmd_marker/stage.pyx"])],
    include_path=[nsmd.fastpath.get_include()],
    compiler_directives={"language_level": "3"},
))
