"""Inject services into plain functions from the scope open around the call."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeAlias, TypeVar, get_args, get_origin, get_type_hints

from uno.di._keys import key_of
from uno.di._resolver import current_scope
from uno.di.exceptions import NoActiveScope, RegistrationError

__all__ = ["Injected", "inject"]

T = TypeVar("T")
R = TypeVar("R")


class _InjectedMarker:
    def __repr__(self) -> str:
        return "Injected"


_INJECTED = _InjectedMarker()

Injected: TypeAlias = Annotated[T, _INJECTED]
"""Mark a parameter of an ``@inject`` function: ``repo: Injected[Repository]``."""


def inject(function: Callable[..., R]) -> Callable[..., R]:
    """Fill the ``Injected[...]`` parameters of ``function`` from the current scope.

    The current scope is the innermost one entered with ``async with`` in this
    context (task, or a thread that copied it); sync ``with`` scopes are not
    tracked, to keep sync resolution free of context switches. Arguments
    passed explicitly win. The
    returned function's signature no longer shows the injected parameters, so
    web frameworks do not try to fill them. Async functions resolve with
    ``aget``, sync ones with ``get``.

    Raises:
        RegistrationError: the function's hints cannot be read.
    """
    try:
        hints = get_type_hints(function, include_extras=True)
    except NameError as error:
        raise RegistrationError(
            f"Cannot read the type hints of {function.__qualname__}: {error}. Import the "
            "named types before decorating with @inject."
        ) from error
    plan = tuple(
        (name, key_of(hint))
        for name, hint in hints.items()
        if name != "return" and _is_injected(hint)
    )
    signature = inspect.signature(function)
    visible = [p for p in signature.parameters.values() if p.name not in dict(plan)]
    label = function.__qualname__

    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def inject_async(*args: Any, **kwargs: Any) -> Any:
            scope = current_scope.get()
            for name, key in plan:
                if name not in kwargs:
                    if scope is None:
                        raise NoActiveScope(label)
                    kwargs[name] = await scope.aget(key)
            return await function(*args, **kwargs)

        wrapper: Callable[..., Any] = inject_async
    else:

        @functools.wraps(function)
        def inject_sync(*args: Any, **kwargs: Any) -> Any:
            scope = current_scope.get()
            for name, key in plan:
                if name not in kwargs:
                    if scope is None:
                        raise NoActiveScope(label)
                    kwargs[name] = scope.get(key)
            return function(*args, **kwargs)

        wrapper = inject_sync
    wrapper.__signature__ = signature.replace(parameters=visible)  # type: ignore[attr-defined]
    return wrapper


def _is_injected(hint: Any) -> bool:
    return get_origin(hint) is Annotated and any(m is _INJECTED for m in get_args(hint)[1:])
