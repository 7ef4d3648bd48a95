"""Errors a user can fix. The CLI prints these without a traceback and exits non-zero."""


class TunesmithError(Exception):
    """A mistake in the user's input, config, data or model folder, with the fix in the message."""


class ConfigError(TunesmithError):
    """A config key or value is unknown or invalid."""


class DataError(TunesmithError):
    """A data file is missing, unreadable or holds rows we cannot train on."""


class ModelError(TunesmithError):
    """A pre-trained model cannot be found or loaded offline."""


class RunFolderError(TunesmithError):
    """The output folder is not in a state this command can use."""


class ExportError(TunesmithError):
    """A run cannot be exported as asked, or the export disagrees with the run (nothing is written)."""


class RequestError(TunesmithError):
    """A request the server refuses (HTTP 4xx): `field` names the part of the request that is wrong."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status
