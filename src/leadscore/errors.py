"""One exception family per kind of failure, caught once in the CLI and the API.

Messages are written for the person who ran the command: they name the file, the column, the
row or the key, and never carry a value from the data (it may be an email address).
"""


class LeadscoreError(Exception):
    """Base class: a problem the user can fix, reported as one plain message."""

    exit_code = 2


class SpecError(LeadscoreError):
    """The dataset spec (YAML) is missing, malformed or inconsistent."""


class DataError(LeadscoreError):
    """A table cannot be read or does not match its spec."""


class ModelError(LeadscoreError):
    """A model bundle cannot be found, verified or used."""
