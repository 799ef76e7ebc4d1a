from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medportal.research.shamir import (
    PRIME,
    add,
    combine,
    combine_counts,
    split,
    split_counts,
    sum_shares,
)

FAST = settings(max_examples=200, deadline=None)

field_elements = st.integers(min_value=0, max_value=PRIME - 1)


@st.composite
def schemes(draw, max_parties: int = 7) -> tuple[int, int]:
    parties = draw(st.integers(min_value=2, max_value=max_parties))
    threshold = draw(st.integers(min_value=2, max_value=parties))
    return parties, threshold


def fixed_randomness(monkeypatch, values: list[int]) -> list[int]:
    """Make ``secrets.randbelow`` return ``values`` in order; returns the
    bounds it is asked for."""
    supply: Iterator[int] = iter(values)
    bounds: list[int] = []

    def randbelow(bound: int) -> int:
        bounds.append(bound)
        return next(supply)

    monkeypatch.setattr(secrets, "randbelow", randbelow)
    return bounds


def polynomial_through(points: list[tuple[int, int]], prime: int) -> list[int]:
    """Coefficients (constant first) of the polynomial of degree < len(points)
    through ``points``, by expanding the Lagrange basis."""
    result = [0] * len(points)
    for i, (x_i, y_i) in enumerate(points):
        basis = [1]
        denominator = 1
        for j, (x_j, _) in enumerate(points):
            if i == j:
                continue
            # basis *= (x - x_j)
            basis = [
                ((basis[n - 1] if n > 0 else 0) - x_j * (basis[n] if n < len(basis) else 0)) % prime
                for n in range(len(basis) + 1)
            ]
            denominator = denominator * (x_i - x_j) % prime
        scale = y_i * pow(denominator, -1, prime) % prime
        for n, coefficient in enumerate(basis):
            result[n] = (result[n] + scale * coefficient) % prime
    return result


# split and combine


@FAST
@given(secret=field_elements, scheme=schemes(), data=st.data())
def test_any_threshold_of_shares_gives_back_the_secret(secret, scheme, data):
    parties, threshold = scheme
    shares = split(secret, parties=parties, threshold=threshold)
    assert [x for x, _ in shares] == list(range(1, parties + 1))
    assert all(0 <= y < PRIME for _, y in shares)
    size = data.draw(st.integers(min_value=threshold, max_value=parties))
    subset = data.draw(st.permutations(shares))[:size]
    assert combine(subset) == secret


def test_split_evaluates_the_polynomial_with_randbelow_coefficients(monkeypatch):
    bounds = fixed_randomness(monkeypatch, [7, 3])
    # f(x) = 5 + 7x + 3x^2
    assert split(5, parties=4, threshold=3) == [(1, 15), (2, 31), (3, 53), (4, 81)]
    assert bounds == [PRIME, PRIME]


def test_split_reduces_shares_modulo_the_prime(monkeypatch):
    fixed_randomness(monkeypatch, [PRIME - 1])
    # f(x) = 10 + (p - 1) x = 10 - x (mod p)
    assert split(10, parties=3, threshold=2) == [(1, 9), (2, 8), (3, 7)]


def test_shares_of_the_same_secret_differ_between_runs():
    # Fresh coefficients each time: equal shares would need two 127-bit random
    # values to collide (probability 2**-127), so this cannot flake in practice.
    first = split(1000, parties=3, threshold=2)
    second = split(1000, parties=3, threshold=2)
    assert first != second
    assert combine(first) == combine(second) == 1000


@pytest.mark.parametrize("secret", range(11))
def test_one_share_takes_every_field_value_equally_often(monkeypatch, secret):
    """Threshold 2 in the field of 11: over all coefficients, party 1's share
    is each value exactly once, whatever the secret, so it says nothing."""
    seen = []
    for coefficient in range(11):
        fixed_randomness(monkeypatch, [coefficient])
        seen.append(split(secret, parties=3, threshold=2, prime=11)[0][1])
    assert sorted(seen) == list(range(11))


@FAST
@given(
    secret=field_elements,
    guess=field_elements,
    threshold=st.integers(min_value=2, max_value=5),
    data=st.data(),
)
def test_fewer_than_threshold_shares_fit_any_secret(secret, guess, threshold, data):
    """For any t - 1 shares of ``secret`` and any ``guess``, some choice of
    coefficients makes split(guess) hand out exactly those shares: the shares
    leave every secret equally possible."""
    coefficients = data.draw(
        st.lists(field_elements, min_size=threshold - 1, max_size=threshold - 1)
    )
    # A context, not the fixture: Hypothesis runs many examples per test call.
    with pytest.MonkeyPatch.context() as monkeypatch:
        fixed_randomness(monkeypatch, coefficients)
        shares = split(secret, parties=threshold, threshold=threshold)
        known = shares[: threshold - 1]

        other = polynomial_through([(0, guess), *known], PRIME)
        assert other[0] == guess
        fixed_randomness(monkeypatch, other[1:])
        guessed_shares = split(guess, parties=threshold, threshold=threshold)

    assert guessed_shares[: threshold - 1] == known
    # So no function of the t - 1 shares (combine included) can tell the two apart.
    assert combine(known) == combine(guessed_shares[: threshold - 1])
    if guess != secret:
        # Two polynomials of degree < t that agree on t points are the same one.
        assert guessed_shares[-1] != shares[-1]


def test_parties_beyond_the_threshold_are_redundant(monkeypatch):
    fixed_randomness(monkeypatch, [11, 22])
    shares = split(42, parties=6, threshold=3)
    assert {combine(shares[i : i + 3]) for i in range(4)} == {42}
    assert combine(shares) == 42


# validation


@pytest.mark.parametrize("secret", [-1, PRIME, PRIME + 5])
def test_split_refuses_a_secret_outside_the_field(secret):
    with pytest.raises(ValueError, match="secret must be at least 0 and below"):
        split(secret, parties=3, threshold=2)


@pytest.mark.parametrize(("parties", "threshold"), [(3, 1), (3, 4), (1, 1), (0, 2), (2, -1)])
def test_split_refuses_impossible_thresholds(parties, threshold):
    with pytest.raises(ValueError, match="threshold must be between 2 and the number of parties"):
        split(1, parties=parties, threshold=threshold)


def test_split_refuses_more_parties_than_the_field_has_points():
    with pytest.raises(ValueError, match="fewer parties than the field's prime"):
        split(1, parties=11, threshold=2, prime=11)
    assert len(split(1, parties=10, threshold=2, prime=11)) == 10


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ([], "no shares"),
        ([(1, 5), (1, 6)], "two shares for x = 1"),
        ([(0, 5), (1, 6)], r"outside 1\.\.prime-1"),
        ([(-1, 5), (1, 6)], r"outside 1\.\.prime-1"),
        ([(PRIME, 5), (1, 6)], r"outside 1\.\.prime-1"),
        ([(1, PRIME), (2, 6)], "y at x = 1 is outside"),
        ([(1, -1), (2, 6)], "y at x = 1 is outside"),
    ],
)
def test_combine_refuses_malformed_shares(shares, message):
    with pytest.raises(ValueError, match=message):
        combine(shares)


# add and the secure sum


@FAST
@given(secrets_=st.lists(st.integers(0, 10**9), min_size=1, max_size=7), scheme=schemes())
def test_added_shares_are_shares_of_the_sum(secrets_, scheme):
    parties, threshold = scheme
    share_lists = [split(s, parties=parties, threshold=threshold) for s in secrets_]
    total = add(*share_lists)
    assert [x for x, _ in total] == list(range(1, parties + 1))
    assert combine(total[:threshold]) == sum(secrets_)
    assert combine(total[-threshold:]) == sum(secrets_)


def test_the_sum_wraps_around_the_prime():
    total = add(split(PRIME - 1, parties=2, threshold=2), split(2, parties=2, threshold=2))
    assert combine(total) == 1


def test_add_matches_shares_by_x_not_position():
    first = split(3, parties=3, threshold=2)
    second = split(4, parties=3, threshold=2)
    assert combine(add(first, list(reversed(second)))) == 7


def test_add_refuses_shares_of_different_parties():
    with pytest.raises(ValueError, match="different parties"):
        add([(1, 1), (2, 2)], [(1, 1), (3, 3)])
    with pytest.raises(ValueError, match="different parties"):
        add([(1, 1), (2, 2)], [(1, 1)])
    with pytest.raises(ValueError, match="no share lists"):
        add()


@FAST
@given(scheme=schemes(), data=st.data())
def test_secure_sum_over_the_full_protocol_equals_the_plain_sum(scheme, data):
    parties, threshold = scheme
    cells = data.draw(
        st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4, unique=True)
    )
    counts = st.fixed_dictionaries({cell: st.integers(0, 10**6) for cell in cells})
    inputs = [data.draw(counts) for _ in range(parties)]

    # Each party splits its counts; outgoing[i][j] is what party i sends party j.
    outgoing = [split_counts(counts, parties=parties, threshold=threshold) for counts in inputs]
    assert all(len(shares) == parties for shares in outgoing)
    # Each party adds up what it received, its own share included, and publishes that.
    published = {
        j + 1: sum_shares([outgoing[i][j] for i in range(parties)]) for j in range(parties)
    }
    size = data.draw(st.integers(min_value=threshold, max_value=parties))
    chosen = data.draw(st.permutations(sorted(published)))[:size]

    totals = combine_counts({x: published[x] for x in chosen})
    assert totals == {cell: sum(counts[cell] for counts in inputs) for cell in cells}


def test_split_counts_gives_each_party_a_share_of_every_cell(monkeypatch):
    fixed_randomness(monkeypatch, [1, 2])
    assert split_counts({"I10": 5, "E11": 0}, parties=3, threshold=2) == [
        {"I10": 6, "E11": 2},
        {"I10": 7, "E11": 4},
        {"I10": 8, "E11": 6},
    ]


def test_count_helpers_refuse_inconsistent_input():
    with pytest.raises(ValueError, match="secret must be at least 0"):
        split_counts({"I10": -1}, parties=3, threshold=2)
    with pytest.raises(ValueError, match="threshold must be between"):
        split_counts({}, parties=3, threshold=4)
    with pytest.raises(ValueError, match="different cells"):
        sum_shares([{"a": 1}, {"b": 1}])
    with pytest.raises(ValueError, match=r"outside 0\.\.prime-1"):
        sum_shares([{"a": PRIME}])
    with pytest.raises(ValueError, match="no shares received"):
        sum_shares([])
    with pytest.raises(ValueError, match="different cells"):
        combine_counts({1: {"a": 1}, 2: {"a": 1, "b": 2}})
    with pytest.raises(ValueError, match="no shares given"):
        combine_counts({})
    with pytest.raises(ValueError, match="two shares for x = 1"):
        combine(list({1: 1}.items()) * 2)
