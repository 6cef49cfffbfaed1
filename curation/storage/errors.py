"""The lake's exceptions (separate so storage modules can share them without import cycles)."""


class LakeError(Exception):
    """A table or version that does not exist, a damaged table, or a write that lost its race."""


class LakeConflict(LakeError):
    """Another writer committed to the table since this writer's snapshot."""
