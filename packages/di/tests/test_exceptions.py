"""The error tree: one root, stable unique codes, and a docstring that draws it all."""

from __future__ import annotations

import inspect

from uno.di import exceptions

ERRORS = [
    cls
    for _, cls in inspect.getmembers(exceptions, inspect.isclass)
    if issubclass(cls, exceptions.UnoDIError)
]


def test_every_error_descends_from_the_root_with_a_unique_dotted_code() -> None:
    codes = [cls.code for cls in ERRORS]
    assert len(set(codes)) == len(codes) == len(exceptions.__all__)
    assert all(code.startswith("di.") for code in codes)


def test_the_module_docstring_draws_every_error_with_its_code() -> None:
    doc = exceptions.__doc__ or ""
    for cls in ERRORS:
        assert f"{cls.__name__} " in doc
        assert cls.code in doc


def test_finalization_errors_form_an_exception_group_that_keeps_its_type_when_split() -> None:
    group = exceptions.FinalizationError("request", [ValueError("a"), KeyError("b")])
    matched, rest = group.split(ValueError)
    assert isinstance(matched, exceptions.FinalizationError)
    assert isinstance(rest, exceptions.FinalizationError)
    assert matched.scope == "request"
    assert [type(e) for e in matched.exceptions] == [ValueError]
