"""Every error loopline raises on purpose, rooted in one class.

The tree::

    LooplineError
    ├── ConfigError            loopline.yaml or a Python config object is invalid
    ├── MissingDependencyError an optional extra is not installed
    ├── StoreError             a metadata / warehouse / lake operation failed
    └── IngestError            batch ingestion
        ├── SourceError        a source could not be read (bad file, HTTP failure, SQL error)
        │   └── TransientSourceError   worth retrying (connection reset, 5xx, 429)
        ├── ContractError      a contract is malformed (unknown rule, bad expression)
        ├── FatalRuleError     a `fatal` rule failed: the batch is aborted, nothing written
        ├── SchemaDriftError   a `freeze` policy met new, missing or retyped columns
        └── SinkError          a destination could not be written
            └── TransientSinkError     worth retrying (the connection was lost)
    ├── StreamError            real-time pipelines
    │   ├── TransportError     a broker could not be reached, subscribed or published to
    │   └── DecodeError        a payload is not valid JSON / MessagePack (quarantined, not raised)
    ├── TrainError             a training job cannot run (bad target, single class, ...)
    ├── EvaluationError        a metric, split or comparison cannot be computed as asked
    ├── RegistryError          model registry: unknown model / version / alias
    │   └── PromotionRejected  the challenger failed the promotion gate
    └── ServeError             online serving
        ├── SignatureError     a request does not match the model's input signature (422)
        └── NotServedError     no such served model / version, or not loaded yet (404 / 503)

Errors carry structured fields (``source=``, ``column=``, ``path=`` ...) and a message that
says what failed, what was received and how to fix it.

>>> try:
...     raise SourceError("cannot open file", source="orders", hint="check the path")
... except LooplineError as exc:
...     print(exc)
cannot open file [source=orders] (hint: check the path)
"""

from __future__ import annotations

from typing import Any


class LooplineError(Exception):
    """Root of every loopline error; ``str()`` gives the message, fields and hint."""

    def __init__(self, message: str, *, hint: str | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.fields = {k: v for k, v in fields.items() if v is not None}

    def __str__(self) -> str:
        text = self.message
        if self.fields:
            text += " [" + ", ".join(f"{k}={v}" for k, v in self.fields.items()) + "]"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class ConfigError(LooplineError):
    """Configuration is invalid; ``path`` is the YAML path of the bad field."""


class MissingDependencyError(LooplineError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed",
            hint=f"pip install 'loopline[{extra}]'",
            package=package,
        )


class StoreError(LooplineError):
    """A metadata database, warehouse or lake operation failed."""


class IngestError(LooplineError):
    """Base of batch ingestion errors."""


class SourceError(IngestError):
    """A source could not be read."""


class TransientSourceError(SourceError):
    """A source failure that is worth retrying (connection reset, HTTP 429 / 5xx)."""


class ContractError(IngestError):
    """A data contract is malformed."""


class FatalRuleError(IngestError):
    """A rule with severity ``fatal`` failed: the batch is aborted and nothing is written."""


class SchemaDriftError(IngestError):
    """Columns changed against the stored schema and the policy is ``freeze`` with abort."""


class SinkError(IngestError):
    """A destination could not be written."""


class TransientSinkError(SinkError):
    """A destination failure worth retrying on a new connection (the batch was rolled back)."""


class StreamError(LooplineError):
    """A real-time pipeline cannot run as configured."""


class TransportError(StreamError):
    """A broker could not be reached, subscribed or published to."""


class DecodeError(StreamError):
    """A payload is not valid JSON / MessagePack or not an object."""


class TrainError(LooplineError):
    """A training job cannot run as configured (unknown target, constant target, ...)."""


class EvaluationError(LooplineError):
    """A metric, split, threshold or comparison cannot be computed as asked."""


class RegistryError(LooplineError):
    """A model registry operation failed (unknown model, version or alias)."""


class PromotionRejected(RegistryError):
    """The challenger did not pass the promotion gate; ``champion`` did not move."""


class ServeError(LooplineError):
    """The server cannot do what was asked (see the subclasses for the HTTP status)."""


class SignatureError(ServeError):
    """Request rows do not match the model's signature; ``errors`` lists each offending field
    as ``{"loc": [...], "msg": ..., "type": ...}`` (FastAPI's 422 detail format)."""

    def __init__(self, message: str, errors: list[dict[str, Any]], **fields: Any) -> None:
        super().__init__(message, **fields)
        self.errors = errors


class NotServedError(ServeError):
    """The model or version is not served, or not loaded yet."""
