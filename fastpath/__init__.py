"""nsmd's data path: Cython modules that move packets in native threads, without the GIL.

Imports nothing from the control path (nsmd.*, aiohttp, asyncio): the only caller is
nsmd.dataplane.
"""

import os


def get_include() -> str:
    """The directory to give Cython (include_path) so a plugin's stage can
    `cimport nsmd.fastpath.stage` (the directory that holds the nsmd package)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
