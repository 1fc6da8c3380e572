"""PII scrubbing of export records with scrubadub.

scrubadub's default detectors (credentials, credit cards, phone numbers via
``phonenumbers``, URLs, Twitter handles, social security numbers) plus:
- a strict email detector (scrubadub's also reads "me at john.smith" as an
  address and leaves the real one half-replaced);
- a name detector that needs no model download (scrubadub's own need spaCy
  or TextBlob corpora, which cannot be fetched here): a first name from
  Faker's name lists followed by a capitalised word ("John Smith"), a
  capitalised word after a cue ("Mr", "Dr", "my name is" ...), and the names
  passed in (e.g. the tenant's user names).
Found PII is replaced by ``{{EMAIL}}``, ``{{PHONE}}``, ``{{NAME}}`` ...
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Generator, Iterable
from functools import lru_cache
from typing import Any

#: Faker locales whose first names are recognised.
NAME_LOCALES = ("en_US", "en_GB", "fr_FR", "de_DE", "es_ES", "it_IT", "nl_NL", "pt_PT")
#: Locales whose national phone number formats are recognised (besides en_US).
PHONE_LOCALES = ("en_GB", "fr_FR", "de_DE")
#: Keys whose string values are structure, not text: never scrubbed.
STRUCTURAL_KEYS = frozenset({"role", "type", "id", "tool_call_id", "name", "from", "label"})
_CUES = r"(?:Mr|Mrs|Ms|Miss|Dr|Prof|Dear|Hi|Hello|my name is|I am|I'm|call me|contact)"
_WORD = r"[A-ZÀ-Ý][a-zà-ÿ]+(?:-[A-ZÀ-Ý][a-zà-ÿ]+)?"


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """First names of Faker's person providers for ``NAME_LOCALES``."""
    names: set[str] = set()
    for locale in NAME_LOCALES:
        module = importlib.import_module(f"faker.providers.person.{locale}")
        provider = module.Provider
        for attr in ("first_names", "first_names_male", "first_names_female"):
            value = getattr(provider, attr, ())
            names.update(value.keys() if isinstance(value, dict) else value)
    return frozenset(n for n in names if len(n) > 2)


class Scrubber:
    """Replaces PII in text; ``version`` names the library and rules for manifests."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        import scrubadub
        from scrubadub.detectors import Detector, PhoneDetector, RegexDetector
        from scrubadub.filth import EmailFilth, Filth, NameFilth

        known = sorted({n.strip() for n in names if n and n.strip()}, key=len, reverse=True)
        firsts = first_names()

        class StrictEmailDetector(RegexDetector):
            filth_cls = EmailFilth
            name = "email"
            regex = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")

        class NameDetector(Detector):
            filth_cls = NameFilth
            name = "name"
            # A lookahead, so "Ask Marie Dupont" also tries "Marie Dupont".
            full = re.compile(rf"(?=\b({_WORD})\s+({_WORD})\b)")
            cue = re.compile(rf"\b{_CUES}\.?\s+({_WORD})", re.IGNORECASE)
            listed = (re.compile(r"\b(" + "|".join(re.escape(n) for n in known) + r")\b",
                                 re.IGNORECASE) if known else None)

            def iter_filth(self, text: str, document_name: str | None = None
                           ) -> Generator[Filth, None, None]:
                spans: list[tuple[int, int]] = []
                for m in self.full.finditer(text):
                    if m.group(1) in firsts:
                        spans.append((m.start(1), m.end(2)))
                for m in self.cue.finditer(text):
                    if m.group(1)[0].isupper():
                        spans.append(m.span(1))
                if self.listed is not None:
                    spans += [m.span() for m in self.listed.finditer(text)]
                for beg, end in spans:
                    yield NameFilth(beg=beg, end=end, text=text[beg:end],
                                    detector_name=self.name, document_name=document_name)

        self._scrubber = scrubadub.Scrubber()
        self._scrubber.remove_detector("email")
        self._scrubber.add_detector(StrictEmailDetector())
        self._scrubber.add_detector(NameDetector())
        # Numbers in the national formats of these locales too (+CC numbers
        # are found by every one of them).
        for locale in PHONE_LOCALES:
            phone = PhoneDetector(locale=locale, name=f"phone_{locale}")
            self._scrubber.add_detector(phone)
        self.detectors = sorted(self._scrubber._detectors)
        self.version = f"scrubadub {scrubadub.__version__}"
        self.replaced = 0

    def clean(self, text: str) -> str:
        """``text`` with its PII replaced."""
        if not text:
            return text
        cleaned: str = self._scrubber.clean(text)
        if cleaned != text:
            self.replaced += 1
        return cleaned

    def record(self, value: Any, key: str | None = None) -> Any:
        """A copy of a JSON record with every text string scrubbed (structural
        fields such as roles and ids are kept)."""
        if isinstance(value, dict):
            return {k: self.record(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.record(v, key) for v in value]
        if isinstance(value, str) and key not in STRUCTURAL_KEYS:
            return self.clean(value)
        return value

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the scrubber."""
        return {"library": self.version, "detectors": self.detectors,
                "name_locales": list(NAME_LOCALES), "fields_changed": self.replaced}
