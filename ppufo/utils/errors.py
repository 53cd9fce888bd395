"""Error types that carry the offending key, file or record in their message."""


class ConfigError(ValueError):
    """A config key is unknown, missing or of the wrong type."""


class DataError(ValueError):
    """A dataset file, list or record is missing or malformed."""
