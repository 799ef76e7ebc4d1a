from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medportal.research.deid import (
    AGE_BANDS,
    age_band,
    date_shift_days,
    k_anonymise,
    request_pseudonym,
    scrub_text,
    shift_date,
    small_cells,
)

KEY = b"research-key-for-tests-only-0123"
FAST = settings(max_examples=200, deadline=None)

keys = st.binary(min_size=16, max_size=64)
identifiers = st.text(min_size=1, max_size=40)
dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31))


def anniversary(birth: date, years: int) -> date:
    """Birthday number ``years``; a 29 February birthday falls on 1 March in common years."""
    try:
        return birth.replace(year=birth.year + years)
    except ValueError:
        return date(birth.year + years, 3, 1)


def completed_years(birth: date, on: date) -> int:
    years = 0
    while anniversary(birth, years + 1) <= on:
        years += 1
    return years


# age_band


def test_age_bands_are_five_years_wide_up_to_90_plus():
    assert len(AGE_BANDS) == 19
    assert AGE_BANDS[:3] == ("0-4", "5-9", "10-14")
    assert AGE_BANDS[-2:] == ("85-89", "90+")


@pytest.mark.parametrize(
    ("years", "band"),
    [
        (0, "0-4"),
        (4, "0-4"),
        (5, "5-9"),
        (9, "5-9"),
        (10, "10-14"),
        (89, "85-89"),
        (90, "90+"),
        (91, "90+"),
        (120, "90+"),
    ],
)
def test_age_band_boundaries(years, band):
    on = date(2024, 7, 1)
    assert age_band(date(on.year - years, 7, 1), on) == band


def test_age_band_counts_a_birthday_from_the_day_itself():
    birth = date(1980, 6, 15)
    assert age_band(birth, date(2020, 6, 14)) == "35-39"
    assert age_band(birth, date(2020, 6, 15)) == "40-44"
    assert age_band(date(1934, 6, 15), date(2024, 6, 14)) == "85-89"
    assert age_band(date(1934, 6, 15), date(2024, 6, 15)) == "90+"


def test_age_band_of_a_29_february_birthday_turns_on_1_march_in_common_years():
    birth = date(2000, 2, 29)
    assert age_band(birth, date(2005, 2, 28)) == "0-4"
    assert age_band(birth, date(2005, 3, 1)) == "5-9"
    assert age_band(birth, date(2004, 2, 29)) == "0-4"  # fourth birthday, a leap year
    assert age_band(date(1920, 2, 29), date(2010, 2, 28)) == "85-89"
    assert age_band(date(1920, 2, 29), date(2010, 3, 1)) == "90+"
    assert age_band(date(1920, 2, 29), date(2012, 2, 29)) == "90+"


def test_age_band_on_the_day_of_birth_is_the_first_band():
    assert age_band(date(2024, 1, 1), date(2024, 1, 1)) == "0-4"


def test_age_band_refuses_a_reference_date_before_birth():
    with pytest.raises(ValueError, match="before the date of birth"):
        age_band(date(2024, 1, 2), date(2024, 1, 1))


def test_age_band_of_datetimes_uses_their_dates():
    birth = datetime(1980, 6, 15, 23, 59, tzinfo=UTC)
    assert age_band(birth, datetime(2020, 6, 15, 0, 1, tzinfo=UTC)) == "40-44"


@FAST
@given(birth=dates, age_in_days=st.integers(min_value=0, max_value=130 * 366))
def test_age_band_matches_completed_years(birth, age_in_days):
    on = birth + timedelta(days=age_in_days)
    years = completed_years(birth, on)
    expected = "90+" if years >= 90 else f"{years // 5 * 5}-{years // 5 * 5 + 4}"
    assert age_band(birth, on) == expected


# request_pseudonym


def test_pseudonym_is_p_and_twenty_lowercase_hex_digits():
    pseudonym = request_pseudonym(key=KEY, request_id="R1", person="patient-1")
    assert re.fullmatch(r"P[0-9a-f]{20}", pseudonym)


@FAST
@given(key=keys, request_id=identifiers, person=identifiers)
def test_same_inputs_give_the_same_pseudonym(key, request_id, person):
    first = request_pseudonym(key=key, request_id=request_id, person=person)
    assert request_pseudonym(key=key, request_id=request_id, person=person) == first


@FAST
@given(
    key=keys,
    requests=st.lists(identifiers, min_size=2, max_size=2, unique=True),
    person=identifiers,
)
def test_a_person_has_a_different_pseudonym_in_each_request(key, requests, person):
    first, second = (request_pseudonym(key=key, request_id=r, person=person) for r in requests)
    assert first != second


@FAST
@given(
    key=keys,
    request_id=identifiers,
    people=st.lists(identifiers, min_size=2, max_size=2, unique=True),
)
def test_people_in_one_request_have_different_pseudonyms(key, request_id, people):
    first, second = (request_pseudonym(key=key, request_id=request_id, person=p) for p in people)
    assert first != second


@FAST
@given(key_pair=st.lists(keys, min_size=2, max_size=2, unique=True), person=identifiers)
def test_another_key_gives_another_pseudonym(key_pair, person):
    first, second = (request_pseudonym(key=k, request_id="R1", person=person) for k in key_pair)
    assert first != second


def test_pseudonym_fields_cannot_slide_into_each_other():
    assert request_pseudonym(key=KEY, request_id="ab", person="c") != request_pseudonym(
        key=KEY, request_id="a", person="bc"
    )
    assert request_pseudonym(key=KEY, request_id="a\x00", person="b") != request_pseudonym(
        key=KEY, request_id="a", person="\x00b"
    )


def test_short_keys_are_refused():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        request_pseudonym(key=b"short", request_id="R1", person="p")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        date_shift_days(key=b"", request_id="R1", person="p")


# date_shift_days and shift_date


@FAST
@given(
    key=keys,
    request_id=identifiers,
    person=identifiers,
    max_days=st.integers(min_value=1, max_value=400),
)
def test_date_shift_is_never_zero_and_within_max_days(key, request_id, person, max_days):
    days = date_shift_days(key=key, request_id=request_id, person=person, max_days=max_days)
    assert days != 0
    assert -max_days <= days <= max_days


@FAST
@given(key=keys, request_id=identifiers, person=identifiers, first=dates, second=dates)
def test_date_shift_keeps_the_intervals_of_one_person(key, request_id, person, first, second):
    days = date_shift_days(key=key, request_id=request_id, person=person)
    shifted_first = date.fromisoformat(shift_date(first, days))
    shifted_second = date.fromisoformat(shift_date(second, days))
    assert shifted_second - shifted_first == second - first
    assert shifted_first - first == timedelta(days=days)


def test_date_shift_is_stable_and_takes_both_signs():
    shifts = [
        date_shift_days(key=KEY, request_id="R1", person=f"patient-{n}", max_days=1)
        for n in range(64)
    ]
    assert set(shifts) == {-1, 1}
    again = [
        date_shift_days(key=KEY, request_id="R1", person=f"patient-{n}", max_days=1)
        for n in range(64)
    ]
    assert again == shifts


def test_date_shift_refuses_max_days_below_one():
    with pytest.raises(ValueError, match="max_days"):
        date_shift_days(key=KEY, request_id="R1", person="p", max_days=0)


def test_shift_date_releases_only_the_date():
    assert shift_date(date(2024, 2, 28), 2) == "2024-03-01"
    assert shift_date(datetime(2024, 12, 31, 23, 30, tzinfo=UTC), 1) == "2025-01-01"
    assert shift_date("2024-01-10", -10) == "2023-12-31"
    assert shift_date("2024-01-10T08:15:00", 1) == "2024-01-11"
    assert shift_date("2024-01-10T23:15:00+05:00", 0) == "2024-01-10"
    eastern = timezone(timedelta(hours=-5))
    assert shift_date(datetime(2024, 1, 10, 23, 0, tzinfo=eastern), 0) == "2024-01-10"


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_shift_date_of_nothing_is_nothing(empty):
    assert shift_date(empty, 5) is None


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01", "10/01/2024", "2024-02-30"])
def test_shift_date_refuses_what_is_not_an_iso_date(text):
    with pytest.raises(ValueError, match="not an ISO date"):
        shift_date(text, 1)


def test_shift_date_refuses_to_leave_the_calendar():
    with pytest.raises(ValueError, match="out of range"):
        shift_date(date(9999, 12, 31), 1)


# scrub_text

FORBIDDEN = ["Mary-Jane O'Brien", "MRN-4471", "José"]


@pytest.mark.parametrize(
    "text",
    [
        "Amlodipine 5 mg",
        "Vitamin D",  # a one-letter word of a name is not matched
        "HbA1c",
        "Vitamin B12 1000 mcg",
        "Paracetamol 0.5-1 g",
        "Aldactone",
        "Penicillin",
    ],
)
def test_scrub_text_keeps_ordinary_names(text):
    assert scrub_text(text, forbidden=FORBIDDEN) == text


@pytest.mark.parametrize(
    "text",
    [
        "Aspirin for Mary",
        "brien's inhaler",  # "O'Brien" is the words "O" (too short) and "Brien"
        "BRIEN",
        "Insulin (Jose)",  # accents and case do not matter
        "see mrn 4471",
        "Call 55512",  # five digits in a row
        "(555) 123-4567",  # a phone number written in groups
        "+1 555 123 4567",
        "given on 3/14/2021",
        "2021-03-14 dose",
        "ask nurse@example.org",
        "see https://example.org/x",
        "www.example.org",
        "host 10.0.0.12",
        "x" * 81,
    ],
)
def test_scrub_text_drops_values_that_could_identify(text):
    assert scrub_text(text, forbidden=FORBIDDEN) is None


def test_scrub_text_collapses_whitespace():
    assert scrub_text("  Amlodipine \t 5\n mg ", forbidden=[]) == "Amlodipine 5 mg"
    assert scrub_text("x" * 80, forbidden=[]) == "x" * 80


@pytest.mark.parametrize("empty", [None, "", " \t\n"])
def test_scrub_text_of_nothing_is_nothing(empty):
    assert scrub_text(empty, forbidden=FORBIDDEN) is None


name_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2)


@FAST
@given(
    before=st.text(alphabet="abcdefgh ", max_size=20),
    name=name_words.filter(lambda word: len(word) <= 20),
    after=st.text(alphabet="abcdefgh ", max_size=20),
)
def test_scrub_text_drops_any_text_with_a_forbidden_word(before, name, after):
    text = f"{before} {name.swapcase()} {after}"
    assert scrub_text(text, forbidden=[f"Dr {name}"]) is None


@FAST
@given(text=st.text(max_size=120), forbidden=st.lists(st.text(max_size=20), max_size=3))
def test_scrub_text_output_is_short_and_has_no_long_digit_runs(text, forbidden):
    cleaned = scrub_text(text, forbidden=forbidden)
    if cleaned is not None:
        assert 0 < len(cleaned) <= 80
        assert cleaned == " ".join(cleaned.split())
        assert not re.search(r"\d{5,}", cleaned)


# k_anonymise

quasi_rows = st.lists(
    st.fixed_dictionaries(
        {
            "pseudonym": st.sampled_from([f"P{n}" for n in range(6)]),
            "age_band": st.sampled_from(["40-44", "45-49"]),
            "sex": st.sampled_from(["female", "male"]),
            "code": st.sampled_from(["I10", "E11"]),
        }
    ),
    max_size=40,
)


def classes(rows: list[dict], quasi: tuple[str, ...]) -> dict[tuple, list[int]]:
    """Row indices per equivalence class."""
    grouped: dict[tuple, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        grouped[tuple(row.get(column) for column in quasi)].append(index)
    return grouped


@FAST
@given(rows=quasi_rows, k=st.integers(min_value=2, max_value=4))
def test_k_anonymise_keeps_exactly_the_classes_of_k_people_and_k_rows(rows, k):
    quasi = ("age_band", "sex")
    kept, suppressed = k_anonymise(rows, quasi=quasi, k=k)

    assert len(kept) + suppressed == len(rows)
    # A sub-sequence of the very same row objects, in input order.
    positions = iter(range(len(rows)))
    kept_indices = [next(i for i in positions if rows[i] is row) for row in kept]
    assert kept_indices == sorted(kept_indices)

    for members in classes(kept, quasi).values():
        assert len(members) >= k
        assert len({kept[i]["pseudonym"] for i in members}) >= k
    for members in classes(rows, quasi).values():
        large = len(members) >= k and len({rows[i]["pseudonym"] for i in members}) >= k
        kept_here = [i for i in members if i in kept_indices]
        assert kept_here == (members if large else [])


def test_k_anonymise_counts_people_not_rows():
    rows = [{"pseudonym": "P1", "sex": "female"} for _ in range(10)]
    rows.append({"pseudonym": "P2", "sex": "female"})
    kept, suppressed = k_anonymise(rows, quasi=["sex"], k=3)
    assert (kept, suppressed) == ([], 11)


def test_k_anonymise_judges_a_person_in_two_classes_per_class():
    rows = [
        {"pseudonym": "P1", "hospital": "alpha"},
        {"pseudonym": "P2", "hospital": "alpha"},
        {"pseudonym": "P1", "hospital": "beta"},
        {"pseudonym": "P3", "hospital": "alpha"},
    ]
    kept, suppressed = k_anonymise(rows, quasi=["hospital"], k=3)
    assert kept == [rows[0], rows[1], rows[3]]
    assert suppressed == 1


def test_k_anonymise_treats_a_missing_column_as_none():
    rows = [{"pseudonym": f"P{n}"} for n in range(3)] + [{"pseudonym": "P9", "sex": "male"}]
    kept, suppressed = k_anonymise(rows, quasi=["sex"], k=3)
    assert kept == rows[:3]
    assert suppressed == 1


def test_k_anonymise_of_nothing_is_nothing():
    assert k_anonymise([], quasi=["sex"], k=5) == ([], 0)


@pytest.mark.parametrize("k", [1, 0, -3])
def test_k_anonymise_refuses_k_below_two(k):
    with pytest.raises(ValueError, match="at least 2"):
        k_anonymise([{"pseudonym": "P1"}], quasi=["sex"], k=k)


# small_cells


def test_small_cells_hides_counts_from_one_to_k_minus_one():
    counts = {"none": 0, "one": 1, "four": 4, "five": 5, "many": 100}
    assert small_cells(counts, 5) == {
        "none": 0,
        "one": "< 5",
        "four": "< 5",
        "five": 5,
        "many": 100,
    }


def test_small_cells_keeps_tuple_keys():
    assert small_cells({("I10", "female"): 2}, 3) == {("I10", "female"): "< 3"}


def test_small_cells_refuses_negative_counts_and_k_below_two():
    with pytest.raises(ValueError, match="negative"):
        small_cells({"x": -1}, 5)
    with pytest.raises(ValueError, match="at least 2"):
        small_cells({"x": 1}, 1)


@FAST
@given(counts=st.dictionaries(st.text(max_size=5), st.integers(0, 50)), k=st.integers(2, 20))
def test_small_cells_shows_every_cell_of_zero_or_at_least_k(counts, k):
    released = small_cells(counts, k)
    assert released.keys() == counts.keys()
    for cell, count in counts.items():
        assert released[cell] == (f"< {k}" if 0 < count < k else count)
