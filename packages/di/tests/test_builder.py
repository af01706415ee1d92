"""Registration: classes, interfaces, factories, instances, names, collections, profiles."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Protocol

import pytest

from uno.di import ContainerBuilder, Named, Scope
from uno.di.exceptions import DuplicateRegistration, RegistrationError


class Settings:
    def __init__(self, url: str = "sqlite://") -> None:
        self.url = url


class Clock(Protocol):
    def now(self) -> int: ...


class FixedClock:
    def now(self) -> int:
        return 42


class Mailer(ABC):
    @abstractmethod
    def send(self, to: str) -> str: ...


class SmtpMailer(Mailer):
    def send(self, to: str) -> str:
        return f"smtp:{to}"


class FakeMailer(Mailer):
    def send(self, to: str) -> str:
        return f"fake:{to}"


class Database:
    def __init__(self, url: str) -> None:
        self.url = url


class Service:
    def __init__(self, clock: Clock, mailer: Mailer, *, settings: Settings) -> None:
        self.clock = clock
        self.mailer = mailer
        self.settings = settings


class Reports:
    def __init__(
        self,
        primary: Annotated[Database, Named("primary")],
        replica: Annotated[Database, Named("replica")],
    ) -> None:
        self.primary = primary
        self.replica = replica


class Plugin(Protocol):
    name: str


class AlphaPlugin:
    name = "alpha"


class BetaPlugin:
    name = "beta"


class PluginHost:
    def __init__(self, plugins: list[Plugin]) -> None:
        self.plugins = plugins


def make_settings() -> Settings:
    return Settings("postgres://")


async def make_database(settings: Settings) -> Database:
    return Database(settings.url)


def open_database(settings: Settings) -> Iterator[Database]:
    yield Database(settings.url)


async def open_async_database(settings: Settings) -> AsyncIterator[Database]:
    yield Database(settings.url)


def test_a_class_is_auto_wired_from_its_constructor_hints_including_keyword_only() -> None:
    builder = ContainerBuilder()
    builder.add(Settings, scope=Scope.APP)
    builder.add(FixedClock, provides=Clock)
    builder.add(SmtpMailer, provides=Mailer)
    builder.add(Service)
    service = builder.build().get(Service)
    assert isinstance(service.clock, FixedClock)
    assert service.clock.now() == 42
    assert service.mailer.send("a@b") == "smtp:a@b"
    assert service.settings.url == "sqlite://"


def test_a_parameter_with_a_default_is_left_to_it_when_nothing_provides_its_type() -> None:
    builder = ContainerBuilder()
    builder.add(Settings)
    assert builder.build().get(Settings).url == "sqlite://"


def test_a_factory_provides_its_return_type() -> None:
    builder = ContainerBuilder()
    builder.add(make_settings)
    assert builder.build().get(Settings).url == "postgres://"


@pytest.mark.anyio
async def test_async_generator_and_async_generator_factories_provide_their_yielded_type() -> None:
    for factory in (make_database, open_database, open_async_database):
        builder = ContainerBuilder()
        builder.add(make_settings, scope=Scope.APP)
        builder.add(factory, scope=Scope.REQUEST)
        async with builder.build() as container, container.scope() as scope:
            database = await scope.aget(Database)
            assert database.url == "postgres://"
            assert await scope.aget(Database) is database


def test_an_instance_is_resolved_as_itself_or_as_the_interface_it_provides() -> None:
    settings, clock = Settings("memory://"), FixedClock()
    builder = ContainerBuilder()
    builder.add_instance(settings)
    builder.add_instance(clock, provides=Clock)
    container = builder.build()
    assert container.get(Settings) is settings
    assert container.get(Clock) is clock


def test_named_services_are_injected_through_annotated_named() -> None:
    builder = ContainerBuilder()
    builder.add_instance(Database("primary://"), name="primary")
    builder.add_instance(Database("replica://"), name="replica")
    builder.add(Reports)
    container = builder.build()
    reports = container.get(Reports)
    assert (reports.primary.url, reports.replica.url) == ("primary://", "replica://")
    assert container.get(Database, "replica").url == "replica://"
    assert container.get(Annotated[Database, Named("primary")]).url == "primary://"


def test_list_of_a_type_collects_every_registration_of_it_in_registration_order() -> None:
    builder = ContainerBuilder()
    builder.add(AlphaPlugin, provides=Plugin, name="alpha")
    builder.add(BetaPlugin, provides=Plugin, name="beta")
    builder.add(PluginHost)
    container = builder.build()
    assert [p.name for p in container.get(PluginHost).plugins] == ["alpha", "beta"]
    assert [p.name for p in container.get(list[Plugin])] == ["alpha", "beta"]


def test_an_empty_collection_resolves_to_an_empty_list() -> None:
    builder = ContainerBuilder()
    builder.add(PluginHost)
    assert builder.build().get(PluginHost).plugins == []


def test_a_profile_selects_between_conditional_registrations() -> None:
    builder = ContainerBuilder()
    builder.add(SmtpMailer, provides=Mailer, profile="production")
    builder.add(FakeMailer, provides=Mailer, profile={"development", "test"})
    assert builder.build(profile="development").get(Mailer).send("x") == "fake:x"
    assert builder.build(profile="production").get(Mailer).send("x") == "smtp:x"


def test_a_predicate_decides_at_build_time_whether_a_registration_counts() -> None:
    flags = {"fake_mail": True}
    builder = ContainerBuilder()
    builder.add(SmtpMailer, provides=Mailer, when=lambda: not flags["fake_mail"])
    builder.add(FakeMailer, provides=Mailer, when=lambda: flags["fake_mail"])
    assert builder.build().get(Mailer).send("x") == "fake:x"
    flags["fake_mail"] = False
    assert builder.build().get(Mailer).send("x") == "smtp:x"


class LoudMailer(Mailer):
    def __init__(self, inner: Mailer, settings: Settings) -> None:
        self.inner = inner
        self.settings = settings

    def send(self, to: str) -> str:
        return self.inner.send(to).upper() + f"@{self.settings.url}"


def bracket(mailer: Mailer) -> Mailer:
    class Bracketed(Mailer):
        def send(self, to: str) -> str:
            return f"[{mailer.send(to)}]"

    return Bracketed()


def test_decorators_wrap_the_resolved_service_in_the_order_they_were_added() -> None:
    builder = ContainerBuilder()
    builder.add(Settings, scope=Scope.APP)
    builder.add(SmtpMailer, provides=Mailer, scope=Scope.APP)
    builder.decorate(Mailer, LoudMailer)
    builder.decorate(Mailer, bracket)
    container = builder.build()
    assert container.get(Mailer).send("a") == "[SMTP:A@sqlite://]"
    assert container.get(Mailer) is container.get(Mailer)


def test_a_registered_instance_is_decorated_once() -> None:
    builder = ContainerBuilder()
    builder.add_instance(Settings())
    builder.add_instance(SmtpMailer(), provides=Mailer)
    builder.decorate(Mailer, LoudMailer)
    container = builder.build()
    assert container.get(Mailer).send("a") == "SMTP:A@sqlite://"
    assert container.get(Mailer) is container.get(Mailer)


def test_a_decorator_without_a_parameter_for_the_service_is_refused() -> None:
    builder = ContainerBuilder()
    builder.add(Settings)
    builder.decorate(Settings, make_settings)
    with pytest.raises(RegistrationError, match="has no parameter annotated Settings"):
        builder.build()


def test_a_duplicate_registration_is_refused_unless_it_says_override() -> None:
    builder = ContainerBuilder()
    builder.add(SmtpMailer, provides=Mailer)
    builder.add(FakeMailer, provides=Mailer)
    with pytest.raises(DuplicateRegistration) as caught:
        builder.build()
    assert caught.value.code == "di.duplicate_registration"
    assert str(caught.value) == (
        "Mailer is already provided by SmtpMailer; cannot register FakeMailer too. Pass "
        "override=True to replace it, give one of them a name (Named), or give them "
        "different profiles."
    )
    overriding = ContainerBuilder()
    overriding.add(SmtpMailer, provides=Mailer)
    overriding.add(FakeMailer, provides=Mailer, override=True)
    assert overriding.build().get(Mailer).send("x") == "fake:x"


def no_return_hint():  # type: ignore[no-untyped-def]
    return 1


def test_a_factory_without_return_hint_is_refused_with_what_to_do() -> None:
    with pytest.raises(RegistrationError, match="Annotate its return type or pass provides"):
        ContainerBuilder().add(no_return_hint)
