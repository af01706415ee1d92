"""Errors of the read-model repositories (defined in ``uno.cqrs.exceptions``)::

CqrsError                           cqrs.error
└── ReadModelError                  cqrs.read_model_error
    ├── DocumentNotFound            cqrs.document_not_found
    ├── DuplicateDocument           cqrs.duplicate_document
    ├── StaleDocumentVersion        cqrs.stale_document_version
    ├── InvalidDocument             cqrs.invalid_document
    ├── InvalidSpecification        cqrs.invalid_specification
    ├── InvalidQuery                cqrs.invalid_query
    │   └── PageSizeTooLarge        cqrs.page_size_too_large
    ├── InvalidCursor               cqrs.invalid_cursor
    ├── ReadModelConfigurationError cqrs.read_model_configuration
    │   └── UnknownReadModelBackend cqrs.unknown_read_model_backend
    ├── ReadModelUnavailable        cqrs.read_model_unavailable
    └── ReadModelNotMigrated        cqrs.read_model_not_migrated
"""

from __future__ import annotations

from uno.cqrs.exceptions import (
    DocumentNotFound,
    DuplicateDocument,
    InvalidCursor,
    InvalidDocument,
    InvalidQuery,
    InvalidSpecification,
    PageSizeTooLarge,
    ReadModelConfigurationError,
    ReadModelError,
    ReadModelNotMigrated,
    ReadModelUnavailable,
    StaleDocumentVersion,
    UnknownReadModelBackend,
)

__all__ = [
    "DocumentNotFound",
    "DuplicateDocument",
    "InvalidCursor",
    "InvalidDocument",
    "InvalidQuery",
    "InvalidSpecification",
    "PageSizeTooLarge",
    "ReadModelConfigurationError",
    "ReadModelError",
    "ReadModelNotMigrated",
    "ReadModelUnavailable",
    "StaleDocumentVersion",
    "UnknownReadModelBackend",
]
