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
