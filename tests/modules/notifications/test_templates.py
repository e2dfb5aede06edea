"""Email and in-app templates: every kind renders in every shipped locale; escaping, fallback, errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import markupsafe
import pytest

from splitstone.modules.notifications.api import Channel, InvalidNotificationData, UnknownNotificationKind
from splitstone.modules.notifications.catalog import KINDS
from splitstone.modules.notifications.templates import Templates

APP_URL = "https://app.example/home"
UNSUBSCRIBE_URL = "https://app.example/unsubscribe?token=abc&category=organization"


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates(product_name="Splitstone", app_url=APP_URL, default_locale="en")


def _cases() -> list[tuple[str, str]]:
    shipped = Templates(product_name="Splitstone", app_url=APP_URL, default_locale="en")
    return [(kind, locale) for kind in KINDS for locale in shipped.locales(kind)]


def _links(data: dict[str, object]) -> list[str]:
    return [value for value in data.values() if isinstance(value, str) and value.startswith("https://")]


def _email(templates: Templates, kind: str, locale: str = "en", **changes: Any) -> Any:
    data = {**KINDS[kind].example, **changes}
    return templates.render_email(kind, locale, data, recipient_name=None, unsubscribe_url=None)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_ships_english_and_german(templates: Templates, kind: str) -> None:
    assert {"en", "de"} <= set(templates.locales(kind))


@pytest.mark.parametrize(("kind", "locale"), _cases())
@pytest.mark.parametrize("recipient_name", [None, "Zoë Example"])
@pytest.mark.parametrize("unsubscribe_url", [None, UNSUBSCRIBE_URL])
def test_every_kind_renders_in_every_shipped_locale(
    templates: Templates, kind: str, locale: str, recipient_name: str | None, unsubscribe_url: str | None
) -> None:
    spec = KINDS[kind]

    if Channel.EMAIL in spec.channels:
        email = templates.render_email(
            kind, locale, spec.example, recipient_name=recipient_name, unsubscribe_url=unsubscribe_url
        )

        assert email.subject
        assert "\n" not in email.subject
        assert email.subject == email.subject.strip()
        assert email.text.strip()
        assert email.html.strip()
        for part in (email.subject, email.text, email.html):
            assert "{{" not in part
            assert "{%" not in part
        for link in [*_links(spec.example), APP_URL]:
            assert link in email.text
            assert str(markupsafe.escape(link)) in email.html
        if recipient_name:
            assert recipient_name in email.text
            assert recipient_name in email.html
        if unsubscribe_url:
            assert unsubscribe_url in email.text
            assert f'href="{markupsafe.escape(unsubscribe_url)}"' in email.html

    if Channel.IN_APP in spec.channels:
        entry = templates.render_in_app(kind, locale, spec.example)
        assert entry.title
        assert entry.body
        assert "\n" not in entry.title
        assert "\n" not in entry.body
        assert "{{" not in entry.title + entry.body


def test_html_escapes_data_and_text_keeps_it_raw(templates: Templates) -> None:
    email = _email(templates, "auth.invitation", org_name="Acme <Inc>", invited_by_name='Grace "G" & co')

    assert "Acme &lt;Inc&gt;" in email.html
    assert "Acme <Inc>" not in email.html
    assert "Grace &#34;G&#34; &amp; co" in email.html
    assert "Acme <Inc>" in email.text
    assert 'Grace "G" & co' in email.text
    assert "Acme <Inc>" in email.subject


def test_html_escapes_the_recipient_name(templates: Templates) -> None:
    email = templates.render_email(
        "auth.password_changed",
        "en",
        KINDS["auth.password_changed"].example,
        recipient_name="Bob <script>",
        unsubscribe_url=None,
    )

    assert "Bob &lt;script&gt;" in email.html
    assert "<script>" not in email.html
    assert "Hi Bob <script>," in email.text


def test_link_attributes_are_escaped(templates: Templates) -> None:
    url = 'https://app.example/accept?token=t0k&x="><b>'

    email = _email(templates, "auth.invitation", accept_url=url)

    assert 'href="https://app.example/accept?token=t0k&amp;x=&#34;&gt;&lt;b&gt;"' in email.html
    assert "<b>" not in email.html
    assert url in email.text


def test_unsubscribe_footer_only_when_a_url_is_given(templates: Templates) -> None:
    data = KINDS["auth.member_joined"].example

    without = templates.render_email(
        "auth.member_joined", "en", data, recipient_name=None, unsubscribe_url=None
    )
    with_url = templates.render_email(
        "auth.member_joined", "en", data, recipient_name=None, unsubscribe_url=UNSUBSCRIBE_URL
    )

    assert "Unsubscribe" not in without.text
    assert "Unsubscribe" not in without.html
    assert f"Unsubscribe: {UNSUBSCRIBE_URL}" in with_url.text
    assert f'href="{markupsafe.escape(UNSUBSCRIBE_URL)}"' in with_url.html
    assert ">Unsubscribe</a>" in with_url.html


def test_greets_by_name_or_generically(templates: Templates) -> None:
    data = KINDS["auth.member_joined"].example

    named = templates.render_email(
        "auth.member_joined", "de", data, recipient_name="Ada", unsubscribe_url=None
    )
    anonymous = templates.render_email(
        "auth.member_joined", "de", data, recipient_name=None, unsubscribe_url=None
    )

    assert named.text.startswith("Hallo Ada,\n")
    assert anonymous.text.startswith("Guten Tag,\n")


def test_account_mail_greets_by_display_name_without_a_recipient_name(templates: Templates) -> None:
    assert _email(templates, "auth.password_reset").text.startswith("Hi Ada,\n")


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("de", "de"),
        ("de-AT", "de"),
        ("de_CH", "de"),
        ("en-GB", "en"),
        ("fr", "en"),
        ("", "en"),
    ],
)
def test_locale_falls_back_to_language_then_default_then_english(
    templates: Templates, locale: str, expected: str
) -> None:
    data = KINDS["auth.password_reset"].example
    reference = templates.render_email(
        "auth.password_reset", expected, data, recipient_name=None, unsubscribe_url=None
    )

    email = templates.render_email(
        "auth.password_reset", locale, data, recipient_name=None, unsubscribe_url=None
    )

    assert email == reference


def test_locale_falls_back_to_the_configured_default_before_english() -> None:
    german_first = Templates(product_name="Splitstone", app_url=APP_URL, default_locale="de")
    data = KINDS["auth.password_reset"].example

    email = german_first.render_email(
        "auth.password_reset", "fr", data, recipient_name=None, unsubscribe_url=None
    )

    assert email.subject == "Setzen Sie Ihr Passwort für Splitstone zurück"


def test_in_app_falls_back_like_email(templates: Templates) -> None:
    data = KINDS["notifications.webhook_endpoint_disabled"].example

    assert templates.render_in_app("notifications.webhook_endpoint_disabled", "de-AT", data).title == (
        "Webhook-Endpunkt deaktiviert"
    )
    assert templates.render_in_app("notifications.webhook_endpoint_disabled", "fr", data).title == (
        "Webhook endpoint disabled"
    )


def test_dates_are_written_out_in_utc_in_the_template_language(templates: Templates) -> None:
    assert "28 November 2026, 12:00 UTC" in _email(templates, "auth.password_reset", "en").text
    assert "28. November 2026, 12:00 UTC" in _email(templates, "auth.password_reset", "de").text
    moved = _email(templates, "auth.password_reset", "de", expires_at="2026-03-01T09:30:00+02:00")
    assert "1. März 2026, 07:30 UTC" in moved.text
    as_object = datetime(2026, 7, 4, 23, 5, tzinfo=timezone(timedelta(hours=-1)))
    assert "5 July 2026, 00:05 UTC" in _email(templates, "auth.password_changed", changed_at=as_object).text


def test_a_value_that_is_no_date_is_invalid_data(templates: Templates) -> None:
    with pytest.raises(InvalidNotificationData, match="next Tuesday"):
        _email(templates, "auth.password_reset", expires_at="next Tuesday")


def test_missing_data_names_the_kind_and_the_variable(templates: Templates) -> None:
    data = dict(KINDS["auth.verify_email"].example)
    del data["verify_url"]

    with pytest.raises(InvalidNotificationData) as raised:
        templates.render_email("auth.verify_email", "en", data, recipient_name=None, unsubscribe_url=None)

    assert "auth.verify_email" in str(raised.value)
    assert "'verify_url' is undefined" in str(raised.value)


def test_missing_data_in_app_is_invalid_data(templates: Templates) -> None:
    with pytest.raises(InvalidNotificationData, match="reason"):
        templates.render_in_app("notifications.webhook_endpoint_disabled", "en", {"url": "https://x.example"})


def test_data_may_not_shadow_the_layout_variables(templates: Templates) -> None:
    with pytest.raises(InvalidNotificationData, match="app_url"):
        _email(templates, "auth.password_reset", app_url="https://evil.example")


def test_an_unknown_kind_is_refused(templates: Templates) -> None:
    with pytest.raises(UnknownNotificationKind):
        templates.render_email("auth.nope", "en", {}, recipient_name=None, unsubscribe_url=None)
    with pytest.raises(UnknownNotificationKind):
        templates.render_in_app("auth.nope", "en", {})
    with pytest.raises(UnknownNotificationKind):
        templates.locales("auth.nope")


def test_a_kind_without_in_app_templates_has_no_in_app_rendering(templates: Templates) -> None:
    with pytest.raises(UnknownNotificationKind, match="in-app"):
        templates.render_in_app("auth.password_reset", "en", KINDS["auth.password_reset"].example)


def test_subject_is_one_line_even_when_data_has_line_breaks(templates: Templates) -> None:
    email = _email(templates, "auth.invitation", invited_by_name="Grace\n  Hopper")

    assert email.subject == "Grace Hopper invited you to join Acme <Inc> on Splitstone"
