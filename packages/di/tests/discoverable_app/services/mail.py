from __future__ import annotations

from typing import Protocol

from uno.di import Scope, injectable


class Mailer(Protocol):
    def send(self, to: str) -> str: ...


@injectable(provides=Mailer, scope=Scope.APP, profile="production")
class SmtpMailer:
    def send(self, to: str) -> str:
        return f"smtp:{to}"


@injectable(provides=Mailer, scope=Scope.APP, profile="development")
class ConsoleMailer:
    def send(self, to: str) -> str:
        return f"console:{to}"


class NotMarked(SmtpMailer):
    pass
