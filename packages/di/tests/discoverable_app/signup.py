from __future__ import annotations

from uno.di import injectable

from .services.mail import Mailer


@injectable
class Signup:
    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer


class Welcome:
    def __init__(self, text: str) -> None:
        self.text = text


@injectable
def welcome() -> Welcome:
    return Welcome("hello")
