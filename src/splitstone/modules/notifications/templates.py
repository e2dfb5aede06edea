"""Jinja2 templates per notification kind and locale: email subjects and bodies, in-app entries.

Files live in the `templates/` folder beside this module::

    templates/<kind>/<locale>/subject.txt          one line (whitespace is collapsed)
    templates/<kind>/<locale>/body.txt             extends layout/base.txt
    templates/<kind>/<locale>/body.html            extends layout/base.html (autoescaped)
    templates/<kind>/<locale>/in_app_title.txt     optional: kinds with the in-app channel
    templates/<kind>/<locale>/in_app_body.txt      one paragraph (whitespace is collapsed)
    templates/layout/<locale>/strings.jinja        the layout's words: greeting, footer, role names

Every template sees the kind's `data` keys as top-level variables (`{{ verify_url }}`), beside
`product_name`, `app_url`, `recipient_name` (None greets generically), `unsubscribe_url` (None hides
the footer's unsubscribe link) and `locale` (the locale whose files are used). A data key may not
reuse one of these names. In blocks of templates extending a layout, `t` holds the locale's layout
strings (`{{ t.roles.get(role, role) }}`). `{{ expires_at | datetime }}` formats an ISO-8601 string
or a datetime in UTC, with month names in the template's language ("28 November 2026, 12:00 UTC").

A locale falls back from `de-AT` to `de`, to the default locale, to `en`. Undefined variables are
errors (`StrictUndefined`), reported as `InvalidNotificationData`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from splitstone.modules.notifications import catalog
from splitstone.modules.notifications.api import InvalidNotificationData, UnknownNotificationKind

TEMPLATE_DIR = Path(__file__).with_name("templates")
FALLBACK_LOCALE = "en"
EMAIL_FILES = ("subject.txt", "body.txt", "body.html")
IN_APP_FILES = ("in_app_title.txt", "in_app_body.txt")
RESERVED_NAMES = frozenset({"product_name", "app_url", "recipient_name", "unsubscribe_url", "locale"})

_MONTHS = {
    "en": (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
    "de": (
        "Januar",
        "Februar",
        "März",
        "April",
        "Mai",
        "Juni",
        "Juli",
        "August",
        "September",
        "Oktober",
        "November",
        "Dezember",
    ),
}
_DATE_FORMATS = {"en": "{day} {month} {year}, {time} UTC", "de": "{day}. {month} {year}, {time} UTC"}


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class RenderedInApp:
    title: str
    body: str


class Templates:
    """Renders notifications from the shipped template files; build one and keep it (it caches)."""

    def __init__(self, *, product_name: str, app_url: str, default_locale: str) -> None:
        self.default_locale = default_locale
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self._env.filters["datetime"] = _datetime_filter
        self._env.globals.update(product_name=product_name, app_url=app_url)
        # kind -> locale -> file names, read once: the files ship with the code.
        self._files: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for name in self._env.list_templates():
            parts = name.split("/")
            if len(parts) == 3:
                kind, locale, file = parts
                self._files[kind][locale].add(file)

    def locales(self, kind: str) -> list[str]:
        """The locales shipped for `kind`, sorted. Raises `UnknownNotificationKind`."""
        catalog.kind(kind)
        return sorted(self._files.get(kind, {}))

    def render_email(
        self,
        kind: str,
        locale: str,
        data: Mapping[str, Any],
        *,
        recipient_name: str | None,
        unsubscribe_url: str | None,
    ) -> RenderedEmail:
        """Subject, plain-text and HTML body of `kind`'s email in `locale` (or its fallback).

        Raises `UnknownNotificationKind`, and `InvalidNotificationData` when `data` lacks a variable
        the templates use.
        """
        found = self._locale_for(kind, locale, EMAIL_FILES, "email")
        context = self._context(kind, found, data)
        context.update(recipient_name=recipient_name, unsubscribe_url=unsubscribe_url)
        subject, text, html = (self._render(kind, found, file, context) for file in EMAIL_FILES)
        return RenderedEmail(subject=_one_line(subject), text=text.strip() + "\n", html=html.strip() + "\n")

    def render_in_app(self, kind: str, locale: str, data: Mapping[str, Any]) -> RenderedInApp:
        """Short title and one-paragraph plain body of `kind`'s in-app entry in `locale`.

        Raises `UnknownNotificationKind` (also for a kind without in-app templates) and
        `InvalidNotificationData`.
        """
        found = self._locale_for(kind, locale, IN_APP_FILES, "in-app")
        context = self._context(kind, found, data)
        title, body = (self._render(kind, found, file, context) for file in IN_APP_FILES)
        return RenderedInApp(title=_one_line(title), body=_one_line(body))

    def _locale_chain(self, locale: str) -> list[str]:
        wanted = locale.replace("_", "-")
        chain = [wanted, wanted.split("-")[0], self.default_locale, self.default_locale.split("-")[0]]
        return list(dict.fromkeys(c for c in [*chain, FALLBACK_LOCALE] if c))

    def _locale_for(self, kind: str, locale: str, files: tuple[str, ...], what: str) -> str:
        catalog.kind(kind)
        shipped = self._files.get(kind, {})
        for candidate in self._locale_chain(locale):
            if set(files) <= shipped.get(candidate, set()):
                return candidate
        raise UnknownNotificationKind(f"Notification kind {kind!r} has no {what} templates.")

    @staticmethod
    def _context(kind: str, locale: str, data: Mapping[str, Any]) -> dict[str, Any]:
        clashes = RESERVED_NAMES & data.keys()
        if clashes:
            raise InvalidNotificationData(
                f"The data for {kind!r} uses reserved template names: {', '.join(sorted(clashes))}."
            )
        return {**data, "locale": locale}

    def _render(self, kind: str, locale: str, file: str, context: Mapping[str, Any]) -> str:
        name = f"{kind}/{locale}/{file}"
        try:
            return self._env.get_template(name).render(context)
        except jinja2.UndefinedError as missing:
            raise InvalidNotificationData(
                f"Cannot render {name}: {missing.message}. The data for {kind!r} needs the keys "
                f"{', '.join(catalog.kind(kind).data)}."
            ) from missing
        except _BadDate as bad:
            raise InvalidNotificationData(f"Cannot render {name}: {bad}") from bad


class _BadDate(ValueError):
    pass


@jinja2.pass_context
def _datetime_filter(context: jinja2.runtime.Context, value: str | datetime) -> str:
    """`{{ value | datetime }}`: an ISO-8601 string or datetime as a UTC date and time in words."""
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise _BadDate(f"{value!r} is not an ISO-8601 date and time.") from None
    if moment.tzinfo is None:  # naive values are UTC throughout this code base
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    language = str(context.get("locale", FALLBACK_LOCALE)).split("-")[0]
    if language not in _DATE_FORMATS:
        language = FALLBACK_LOCALE
    return _DATE_FORMATS[language].format(
        day=moment.day,
        month=_MONTHS[language][moment.month - 1],
        year=moment.year,
        time=f"{moment:%H:%M}",
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())
