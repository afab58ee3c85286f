"""Stage capsules: how a function's Cython stage reaches the engine (see stage.pxd)."""

from cpython.pycapsule cimport PyCapsule_New

CAPSULE_NAME = "nsmd.fastpath.stage.Stage"
ABI_VERSION = STAGE_ABI_VERSION
DIRECTIONS = {"client_to_endpoint": DIR_CLIENT_TO_ENDPOINT,
              "endpoint_to_client": DIR_ENDPOINT_TO_CLIENT}

cdef bytes _NAME = CAPSULE_NAME.encode()


cdef object stage_capsule(Stage *stage):
    """A capsule for `stage`; whoever holds the Stage keeps it alive as long as the capsule
    is installed (the engine keeps the capsule's owner, not the capsule, alive)."""
    stage.abi = STAGE_ABI_VERSION
    return PyCapsule_New(<void *>stage, _NAME, NULL)
