"""De-identification of record data for research releases.

A release follows the HIPAA Safe Harbor method (45 CFR 164.514(b)(2)): names,
record numbers and every other direct identifier are left out by the caller,
which copies only coded fields; what remains is made safe here:

* people are known by a pseudonym that is fixed within one research request and
  different in every other, so two releases cannot be joined on it;
* ages are released in five-year bands, and everyone aged 90 or over falls in
  one band ("90+"), as Safe Harbor requires;
* dates are shifted by a secret number of days, the same for all of one person's
  dates within one request, so intervals between a person's events survive but
  the calendar dates do not (a research variant of Safe Harbor's "year only"
  rule, which is why the shift never is zero);
* short free-text values (a drug or lab test name) are dropped when they look
  like they carry an identifier;
* rows whose quasi-identifiers are shared by fewer than k people are suppressed
  (k-anonymity), and aggregate counts below k are shown as "< k".

Everything here is a pure function of its inputs and a secret key; nothing is
stored, so the same request with the same key always gives the same release.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import TypeVar

CellKey = TypeVar("CellKey", bound=Hashable)

AGE_BANDS: tuple[str, ...] = (*(f"{low}-{low + 4}" for low in range(0, 90, 5)), "90+")

# Shorter keys would make the pseudonyms and date shifts guessable offline.
MINIMUM_KEY_BYTES = 16

PSEUDONYM_HEX_CHARS = 20  # 80 bits: collisions within any one release are negligible
SCRUB_MAX_LENGTH = 80

_PSEUDONYM_LABEL = "medportal/research/pseudonym/v1"
_DATE_SHIFT_LABEL = "medportal/research/date-shift/v1"

_DIGIT_RUN = re.compile(r"\d{5,}")
# Phone and fax numbers are usually written in groups ("(555) 123-4567"), which
# the five-digit run misses: seven or more digits joined by single separators.
_DIGIT_GROUPS = re.compile(r"\d(?:[\s().-]?\d){6,}")
# A calendar date other than a year is a Safe Harbor identifier ("3/14/2021").
_CALENDAR_DATE = re.compile(r"\b\d{1,4}([-/])\d{1,2}\1\d{1,4}\b")
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")
_URL = re.compile(r"\b(?:[a-z][a-z0-9+.-]*://|www\.)", re.IGNORECASE)
_IP_ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_WORD = re.compile(r"\w+")
_WHITESPACE = re.compile(r"\s+")


def _check_key(key: bytes) -> None:
    if len(key) < MINIMUM_KEY_BYTES:
        raise ValueError(f"the research key must be at least {MINIMUM_KEY_BYTES} bytes")


def _keyed_digest(key: bytes, label: str, *fields: str) -> bytes:
    """HMAC-SHA256 over length-prefixed fields, so ("ab", "c") and ("a", "bc")
    differ, and under a label, so a pseudonym never doubles as a date shift."""
    _check_key(key)
    message = bytearray()
    for field in (label, *fields):
        encoded = field.encode()
        message += len(encoded).to_bytes(4, "big") + encoded
    return hmac.new(key, bytes(message), hashlib.sha256).digest()


def age_band(birth_date: date, on: date) -> str:
    """The five-year band of the age in completed years on ``on``.

    Someone born on 29 February turns a year older on 1 March in common years
    (the day after 28 February), the usual convention for completed years.
    """
    # datetime is a date subclass that refuses to compare with a date; an age
    # is a matter of calendar dates only.
    if isinstance(birth_date, datetime):
        birth_date = birth_date.date()
    if isinstance(on, datetime):
        on = on.date()
    if on < birth_date:
        raise ValueError("the reference date is before the date of birth")
    years = on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))
    if years >= 90:
        return AGE_BANDS[-1]
    return AGE_BANDS[years // 5]


def request_pseudonym(*, key: bytes, request_id: str, person: str) -> str:
    """The name a person goes by in one research request's release.

    Keyed, so nobody without the key can recompute it from a patient id, and
    bound to the request, so two releases cannot be joined on it.
    """
    digest = _keyed_digest(key, _PSEUDONYM_LABEL, request_id, person)
    return "P" + digest.hex()[:PSEUDONYM_HEX_CHARS]


def date_shift_days(*, key: bytes, request_id: str, person: str, max_days: int = 182) -> int:
    """A person's secret date offset in one request: in [-max_days, -1] or
    [1, max_days], never 0 (an unshifted date would be released as is).

    The offset is the first 64 bits of an HMAC reduced modulo 2 * max_days; the
    bias of that reduction is below 2 * max_days / 2**64, far too small to
    matter, so no rejection loop is needed.
    """
    if max_days < 1:
        raise ValueError("max_days must be at least 1")
    digest = _keyed_digest(key, _DATE_SHIFT_LABEL, request_id, person)
    offset = int.from_bytes(digest[:8], "big") % (2 * max_days)
    return offset - max_days if offset < max_days else offset - max_days + 1


def shift_date(value: date | datetime | str | None, days: int) -> str | None:
    """The ISO date ``days`` after ``value``; ``None`` when there is no date.

    Only the calendar date is released: a time of day narrows down an event
    (and its hospital shift) more than research needs. An aware datetime keeps
    the date of its own offset, which is the date the record's writer saw.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = date.fromisoformat(text)
        except ValueError:
            try:
                value = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(f"not an ISO date: {text!r}") from None
    if isinstance(value, datetime):
        value = value.date()
    if not isinstance(value, date):
        raise TypeError(f"cannot shift a {type(value).__name__}")
    try:
        return date.fromordinal(value.toordinal() + days).isoformat()
    except (OverflowError, ValueError):
        raise ValueError(f"{value.isoformat()} shifted by {days} days is out of range") from None


def _fold(text: str) -> str:
    """Case- and accent-insensitive form, so "José" also matches "JOSE"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


def _words(text: str) -> set[str]:
    return {word for word in _WORD.findall(_fold(text)) if len(word) >= 2}


def scrub_text(text: str | None, *, forbidden: Iterable[str]) -> str | None:
    """A short free-text value (drug, lab test or allergy substance) fit for
    release, or ``None`` when it must be dropped.

    The field is meant to hold a name from a formulary, so anything that looks
    like it carries more is dropped rather than edited: a word of the patient's
    name or record number (each word of ``forbidden`` of two or more letters,
    matched as a whole word, ignoring case and accents), five or more digits in
    a row or a phone-shaped group of seven or more, a calendar date, an e-mail
    address, a URL, an IP address, or more than 80 characters. Redacting in
    place would leave the rest of a sentence that was never meant to be
    released. Single-letter words of a name are not matched: initials would
    drop "Vitamin D" for every patient called D.
    """
    if text is None:
        return None
    cleaned = _WHITESPACE.sub(" ", text).strip()
    if not cleaned or len(cleaned) > SCRUB_MAX_LENGTH:
        return None
    forbidden_words: set[str] = set()
    for value in forbidden:
        if value:
            forbidden_words |= _words(str(value))
    if forbidden_words & _words(cleaned):
        return None
    for pattern in (_DIGIT_RUN, _DIGIT_GROUPS, _CALENDAR_DATE, _EMAIL, _URL, _IP_ADDRESS):
        if pattern.search(cleaned):
            return None
    return cleaned


def k_anonymise(
    rows: list[dict], *, quasi: Sequence[str], k: int, person: str = "pseudonym"
) -> tuple[list[dict], int]:
    """The rows whose quasi-identifier values are shared by at least ``k``
    distinct people in at least ``k`` rows, in their original order, and the
    number of rows suppressed.

    Counting people, not rows, matters: one patient with ten visits would
    otherwise make a class of ten look safe. A missing column counts as the
    value ``None``.

    Classes are judged one by one, so a person whose rows fall into different
    classes (say, records at two hospitals when ``hospital`` is a
    quasi-identifier) keeps the rows of the large classes and loses those of
    the small ones. Because a pseudonym links a person's rows, the set of
    classes a person appears in is itself identifying, and this function does
    not protect it: choose quasi-identifiers that are constant per person (age
    band, sex) when a release must be k-anonymous per person, not per row.
    """
    if k < 2:
        raise ValueError("k must be at least 2 (k = 1 protects nobody)")
    keys = [tuple(row.get(column) for column in quasi) for row in rows]
    people: dict[tuple, set] = defaultdict(set)
    sizes: dict[tuple, int] = defaultdict(int)
    for row, class_key in zip(rows, keys, strict=True):
        people[class_key].add(row.get(person))
        sizes[class_key] += 1
    large = {
        class_key for class_key, size in sizes.items() if size >= k and len(people[class_key]) >= k
    }
    kept = [row for row, class_key in zip(rows, keys, strict=True) if class_key in large]
    return kept, len(rows) - len(kept)


def small_cells(counts: Mapping[CellKey, int], k: int) -> dict[CellKey, int | str]:
    """Aggregate counts with every cell of 1 to k-1 shown as "< k".

    Zero stays 0: a cell with nobody in it cannot single anyone out, and hiding
    it would make empty cells indistinguishable from rare ones for no gain.
    Totals are the caller's concern: a total published beside the cells lets a
    reader subtract the visible cells and recover a hidden one, so derive
    totals from the released cells or suppress a second cell in the same row.
    """
    if k < 2:
        raise ValueError("k must be at least 2 (k = 1 protects nobody)")
    released: dict[CellKey, int | str] = {}
    for cell, count in counts.items():
        if count < 0:
            raise ValueError(f"negative count for {cell!r}")
        released[cell] = f"< {k}" if 0 < count < k else count
    return released
