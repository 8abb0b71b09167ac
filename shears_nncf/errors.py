"""The one exception type users see: the CLI prints its message on one line and exits 2."""


class ShearsError(Exception):
    """Bad input (config, path, ratio, pattern, ...). The message names what is wrong and what would be right."""
