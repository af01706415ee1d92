"""Discovery: @injectable marks providers, ContainerBuilder.scan registers a package's."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from uno.di import ContainerBuilder


@pytest.fixture(autouse=True)
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def test_scan_registers_every_marked_provider_of_a_package_and_its_subpackages() -> None:
    signup = importlib.import_module("discoverable_app.signup")
    builder = ContainerBuilder()
    builder.scan("discoverable_app")
    container = builder.build(profile="development")
    assert container.get(signup.Signup).mailer.send("ada") == "console:ada"
    assert container.get(signup.Welcome).text == "hello"
    assert builder.build(profile="production").get(signup.Signup).mailer.send("ada") == "smtp:ada"


def test_subclasses_of_a_marked_class_are_not_registered() -> None:
    mail = importlib.import_module("discoverable_app.services.mail")

    builder = ContainerBuilder()
    builder.scan(mail)
    container = builder.build(profile="production")
    with pytest.raises(LookupError):
        container.get(mail.NotMarked)
