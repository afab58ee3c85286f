"""nsmd's data path: Cython modules that move packets in native threads, without the GIL.

Imports nothing from the control path (nsmd.*, aiohttp, asyncio): the only caller is
nsmd.dataplane.
"""
