"""What the bots themselves say, in the user's language: one catalogue per locale.

The catalogues live in :mod:`core.locales` (``en`` is the reference, ``pt-PT`` the sellers'
language). A :class:`Catalogue` picks the locale from the user's platform language (Telegram's
``language_code``, Discord's ``locale``), falls back to the bot's default locale, and applies
the operator's overrides from the configuration (``[bots.texts.<locale>]``). Backends report
failure *kinds* and *reasons* (``Failure.kind``, ``Failure.reason`` with structured
``fields``; ``Notice.reason``), never sentences: every reason is a key of the catalogues, so
the user reads it in their language and the operator may reword it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from types import MappingProxyType

from chatbridge.core.images import ImageRejected
from chatbridge.core.locales import en, pt_pt
from chatbridge.core.types import Failure, FailureKind, Notice

CATALOGUES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"en": en.TEXTS, "pt-PT": pt_pt.TEXTS}
)
LOCALES = tuple(CATALOGUES)
DEFAULT_LOCALE = "en"

_KIND_KEYS = {
    FailureKind.VALIDATION: "validation",
    FailureKind.BAD_INPUT: "bad_input",
    FailureKind.AUTH: "auth",
    FailureKind.TIMEOUT: "timeout",
    FailureKind.MALFORMED: "malformed",
    FailureKind.UNAVAILABLE: "unavailable",
    FailureKind.SESSION_EXPIRED: "unavailable",
}


def placeholders(text: str) -> set[str]:
    """The ``{name}`` fields a text uses."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def locale_for(language: str | None, default: str = DEFAULT_LOCALE) -> str:
    """The catalogue for a platform language tag: ``pt``, ``pt-PT``, ``pt_BR`` -> ``pt-PT``
    (the only Portuguese we have), ``en-GB`` -> ``en``; anything else -> ``default``."""
    if language:
        tag = language.replace("_", "-").strip()
        for locale in LOCALES:
            if tag.lower() == locale.lower():
                return locale
        primary = tag.split("-", 1)[0].lower()
        for locale in LOCALES:
            if locale.split("-", 1)[0].lower() == primary:
                return locale
    return default


def check_overrides(overrides: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Problems with operator overrides, phrased as ``locale.key: what is wrong``."""
    problems: list[str] = []
    for locale, texts in overrides.items():
        if locale not in CATALOGUES:
            problems.append(f"{locale}: unknown locale (known: {', '.join(LOCALES)})")
            continue
        for key, text in texts.items():
            reference = en.TEXTS.get(key)
            if reference is None:
                problems.append(f"{locale}.{key}: no such text (see core/locales/en.py)")
                continue
            extra = placeholders(text) - placeholders(reference)
            if extra:
                fields = ", ".join("{" + name + "}" for name in sorted(extra))
                problems.append(f"{locale}.{key}: uses {fields}, which this text does not offer")
    return problems


class Catalogue:
    """Texts of one bot: the built-in catalogues, its default locale, its overrides."""

    def __init__(
        self,
        default_locale: str = DEFAULT_LOCALE,
        overrides: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        if default_locale not in CATALOGUES:
            raise ValueError(f"unknown locale {default_locale!r} (known: {', '.join(LOCALES)})")
        problems = check_overrides(overrides or {})
        if problems:
            raise ValueError("; ".join(problems))
        self.default_locale = default_locale
        self._overridden = {locale: frozenset(t) for locale, t in (overrides or {}).items()}
        self._texts = {
            locale: {**texts, **(overrides or {}).get(locale, {})}
            for locale, texts in CATALOGUES.items()
        }

    def overridden(self, locale: str) -> frozenset[str]:
        """The keys the operator reworded for ``locale``."""
        return self._overridden.get(locale, frozenset())

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self._texts[DEFAULT_LOCALE])

    def locale(self, language: str | None) -> str:
        return locale_for(language, self.default_locale)

    def template(self, key: str, language: str | None = None) -> str:
        """The raw text (placeholders unfilled) for ``key`` in the user's locale."""
        return self._texts[self.locale(language)][key]

    def text(self, key: str, language: str | None = None, **fields: object) -> str:
        template = self.template(key, language)
        return template.format(**fields) if fields else template

    def rejection(self, exc: ImageRejected, language: str | None = None) -> str:
        """Why a photo was refused, in the user's language (``not_a_photo`` if the key is
        unknown or a placeholder has no value: a refusal always says something useful)."""
        key = exc.key if exc.key in self._texts[DEFAULT_LOCALE] else "not_a_photo"
        template = self.template(key, language)
        if not placeholders(template) <= exc.fields.keys():
            return self.template("not_a_photo", language)
        return template.format(**exc.fields) if exc.fields else template

    def user_texts(self, language: str | None = None) -> UserTexts:
        return UserTexts(self, language)


class UserTexts:
    """The engine's view of a catalogue in one language; attributes are the raw templates
    (``texts.flood.format(seconds=3)``)."""

    def __init__(self, catalogue: Catalogue | None = None, language: str | None = None) -> None:
        self.catalogue = catalogue if catalogue is not None else Catalogue()
        self.language = language

    def in_language(self, language: str | None) -> UserTexts:
        return UserTexts(self.catalogue, language or self.language)

    def text(self, key: str, **fields: object) -> str:
        return self.catalogue.text(key, self.language, **fields)

    def _get(self, key: str) -> str:
        return self.catalogue.template(key, self.language)

    unavailable = property(lambda self: self._get("unavailable"))
    timeout = property(lambda self: self._get("timeout"))
    malformed = property(lambda self: self._get("malformed"))
    validation = property(lambda self: self._get("validation"))
    auth = property(lambda self: self._get("auth"))
    bad_input = property(lambda self: self._get("bad_input"))
    internal = property(lambda self: self._get("internal"))
    restarted = property(lambda self: self._get("restarted"))
    flood = property(lambda self: self._get("flood"))
    interrupted = property(lambda self: self._get("interrupted"))
    empty = property(lambda self: self._get("empty"))
    resend_after_restart = property(lambda self: self._get("resend_after_restart"))
    cancelled = property(lambda self: self._get("cancelled"))
    refused = property(lambda self: self._get("refused"))

    def _filled(self, key: str, fields: Mapping[str, object]) -> str | None:
        """``key``'s text with its placeholders filled; None when a placeholder has no value."""
        template = self._get(key)
        if not placeholders(template) <= fields.keys():
            return None
        return template.format(**fields) if fields else template

    def for_failure(self, failure: Failure, language: str | None = None) -> str:
        """The plain-language reply for a failed turn, in the user's language: the text of
        the failure's reason (filled from its fields), else the text of its kind."""
        texts = self.in_language(language) if language else self
        if failure.reason is not None and failure.reason in en.TEXTS:
            text = texts._filled(failure.reason, failure.fields)
            if text is not None:
                return text
        return texts._get(_KIND_KEYS.get(failure.kind, "internal"))

    def for_notice(self, notice: Notice, language: str | None = None) -> str | None:
        """What a backend's notice says, in the user's language; None for a reason the
        catalogues do not know, or whose fields are missing: better unsaid than wrong."""
        texts = self.in_language(language) if language else self
        if notice.reason not in en.TEXTS:
            return None
        return texts._filled(notice.reason, notice.fields)
