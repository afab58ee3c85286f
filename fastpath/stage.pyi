CAPSULE_NAME: str
ABI_VERSION: int
DIRECTIONS: dict[str, int]
