"""The error every data problem raises."""


class DataError(ValueError):
    """Bad data or data config: the message names the culprit and what to do."""
