"""The error tree: one root, stable unique codes, and a docstring that draws it all."""

from __future__ import annotations

import inspect

from uno.events import WrongExpectedVersion, exceptions
from uno.events._store import NO_STREAM

ERRORS = [
    cls
    for _, cls in inspect.getmembers(exceptions, inspect.isclass)
    if issubclass(cls, exceptions.UnoEventsError)
]


def test_every_error_descends_from_the_root_with_a_unique_dotted_code() -> None:
    codes = [cls.code for cls in ERRORS]
    assert len(set(codes)) == len(codes) == len(exceptions.__all__)
    for cls in ERRORS:
        assert issubclass(cls, exceptions.UnoEventsError)
        assert cls.code.startswith(("events.", "event_storage."))


def test_the_module_docstring_draws_every_error_with_its_code() -> None:
    doc = exceptions.__doc__ or ""
    for cls in ERRORS:
        assert f"{cls.__name__}" in doc
        assert cls.code in doc


def test_wrong_expected_version_carries_both_versions_and_says_what_to_do() -> None:
    error = WrongExpectedVersion("account-1", NO_STREAM, 4)
    assert (error.stream_id, error.expected, error.actual) == ("account-1", NO_STREAM, 4)
    assert str(error) == (
        "Stream 'account-1' is at version 4, but the append expected NO_STREAM. "
        "Nothing was written: reload the stream, decide again and retry."
    )
    assert "does not exist" in str(WrongExpectedVersion("a", 3, None))
    assert error.code == "event_storage.wrong_expected_version"
