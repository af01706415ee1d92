"""uno.web installs on its own as a typed member of the uno namespace."""

from importlib import resources


def test_ships_py_typed_inside_the_uno_namespace() -> None:
    assert resources.files("uno.web").joinpath("py.typed").is_file()
