"""Every error the core raises on purpose. Each message says what happened and what to do.

Third-party failures are translated at one boundary (`raise ... from e`); builtin bases let callers
catch them with the usual exception types too.
"""

from __future__ import annotations


class PocketError(Exception):
    """Base of every error Pocket NLP raises on purpose."""


class ModelNotFoundError(PocketError, LookupError):
    """The model id, revision or folder does not exist."""


class OfflineError(PocketError, ConnectionError):
    """The Hub cannot be reached and nothing usable is cached."""


class AccessDeniedError(PocketError, PermissionError):
    """A gated or private repo needs a login token."""


class UnsupportedModelError(PocketError, ValueError):
    """The architecture, head or weight format is not one we can convert; `supported` lists what is, when the
    architecture was the problem (the message stays one sentence)."""

    def __init__(self, message: str, supported: tuple[str, ...] = ()):
        super().__init__(message)
        self.supported = tuple(supported)


class InvalidModelError(PocketError, ValueError):
    """The model files are there but broken: bad config, corrupt or truncated weights, missing tensors."""


class NotAModelFolderError(InvalidModelError):
    """A folder without config.json: not a Hugging Face model folder at all (an empty or wrong folder)."""


class ExportError(PocketError, RuntimeError):
    """Building or writing the ONNX graph failed."""


class QuantizationError(PocketError, RuntimeError):
    """Optimizing or quantizing the graph failed."""


class StoreError(PocketError, OSError):
    """The model store cannot be read or written (full disk, read-only, locked by another conversion)."""


class DamagedEntryError(StoreError):
    """A store entry is incomplete or its files changed since they were written; carries the entry's folder."""

    def __init__(self, message: str, path=None):
        super().__init__(message)
        self.path = path


class BenchError(PocketError, RuntimeError):
    """A measurement could not be made (the fresh process that loads the model failed)."""


class InputError(PocketError, ValueError):
    """User input (text, data file, option) is not usable; the message names the file, line and field."""


class CancelledError(PocketError):
    """The user cancelled; nothing was left half-written."""
