"""Shamir secret sharing over a prime field, for secure sums of counts.

Hospitals answering a research query can add up their counts without any of
them (or the hub) seeing another's: each hospital splits every count into one
share per party, sends share j to party j, each party adds the shares it
received, and any ``threshold`` of those sums reconstruct the total. This works
because shares of a prime-field polynomial add: the sum of two parties' shares
at x is the share, at x, of the sum of their secrets.

Written here on the standard library (``secrets``, ``pow(x, -1, p)``) because no
well-maintained Python library offers Shamir over a prime field with this
additive property: PyCryptodome's ``Crypto.Protocol.SecretSharing.Shamir``
works in GF(2^128) with 16-byte secrets, where adding shares is XOR, so the
combined "sum" would be the XOR of the counts, not their integer sum.

What this does not give: the scheme protects against parties that follow the
protocol but are curious (any ``threshold - 1`` of them learn nothing about a
count). It does not detect a party that sends wrong shares; that needs
verifiable secret sharing. Shares must travel over authenticated, encrypted
channels, and a reconstructed total may itself need small-cell suppression
before it is shown.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

PRIME = 2**127 - 1  # a Mersenne prime, far above any count

Share = tuple[int, int]  # (x, y): the polynomial's value y at x


def _evaluate(coefficients: Sequence[int], x: int, prime: int) -> int:
    """Horner's rule; ``coefficients[0]`` is the constant term."""
    value = 0
    for coefficient in reversed(coefficients):
        value = (value * x + coefficient) % prime
    return value


def _check_parameters(*, parties: int, threshold: int, prime: int) -> None:
    if prime < 3:
        raise ValueError("the field's prime must be at least 3")
    if not 2 <= threshold <= parties:
        raise ValueError(
            f"the threshold must be between 2 and the number of parties "
            f"(threshold {threshold}, parties {parties})"
        )
    if parties >= prime:
        raise ValueError("there must be fewer parties than the field's prime")


def split(secret: int, *, parties: int, threshold: int, prime: int = PRIME) -> list[Share]:
    """Shares of ``secret`` for parties 1..``parties``, any ``threshold`` of
    which reconstruct it and fewer of which say nothing about it.

    ``prime`` must be a prime (it is not tested); the default suits counts.
    """
    _check_parameters(parties=parties, threshold=threshold, prime=prime)
    if not 0 <= secret < prime:
        raise ValueError("the secret must be at least 0 and below the field's prime")
    # Uniform coefficients, zero included: forcing the top one non-zero would
    # make the shares (slightly) non-uniform.
    coefficients = [secret, *(secrets.randbelow(prime) for _ in range(threshold - 1))]
    return [(x, _evaluate(coefficients, x, prime)) for x in range(1, parties + 1)]


def _check_shares(shares: Sequence[Share], prime: int) -> None:
    if not shares:
        raise ValueError("no shares given")
    seen: set[int] = set()
    for x, y in shares:
        if not 0 < x < prime:
            raise ValueError(f"share x = {x} is outside 1..prime-1")
        if not 0 <= y < prime:
            raise ValueError(f"share y at x = {x} is outside 0..prime-1")
        if x in seen:
            raise ValueError(f"two shares for x = {x}")
        seen.add(x)


def combine(shares: Sequence[Share], *, prime: int = PRIME) -> int:
    """The secret behind ``shares`` (Lagrange interpolation at x = 0).

    Given fewer shares than the threshold, the result is a meaningless number,
    not an error: the scheme cannot tell, which is the point of it.
    """
    _check_shares(shares, prime)
    secret = 0
    for i, (x_i, y_i) in enumerate(shares):
        numerator = 1
        denominator = 1
        for j, (x_j, _) in enumerate(shares):
            if i != j:
                numerator = numerator * x_j % prime
                denominator = denominator * (x_j - x_i) % prime
        secret = (secret + y_i * numerator * pow(denominator, -1, prime)) % prime
    return secret


def add(*share_lists: Sequence[Share], prime: int = PRIME) -> list[Share]:
    """Shares of the sum of the secrets behind ``share_lists``: the shares with
    the same x added together, in the order of the first list."""
    if not share_lists:
        raise ValueError("no share lists given")
    for shares in share_lists:
        _check_shares(shares, prime)
    xs = [x for x, _ in share_lists[0]]
    by_x = [dict(shares) for shares in share_lists]
    for values in by_x[1:]:
        if set(values) != set(xs):
            raise ValueError("the share lists are for different parties (x values)")
    return [(x, sum(values[x] for values in by_x) % prime) for x in xs]


def split_counts(
    counts: Mapping[str, int], *, parties: int, threshold: int, prime: int = PRIME
) -> list[dict[str, int]]:
    """One dict per party (index i is party x = i + 1) with its share of every
    cell of ``counts``; every cell gets its own random polynomial."""
    _check_parameters(parties=parties, threshold=threshold, prime=prime)
    per_party: list[dict[str, int]] = [{} for _ in range(parties)]
    for cell, count in counts.items():
        for index, (_, y) in enumerate(
            split(count, parties=parties, threshold=threshold, prime=prime)
        ):
            per_party[index][cell] = y
    return per_party


def sum_shares(received: Sequence[Mapping[str, int]], *, prime: int = PRIME) -> dict[str, int]:
    """What one party publishes: the sum, cell by cell, of the shares it
    received from every party (its own included)."""
    if not received:
        raise ValueError("no shares received")
    cells = set(received[0])
    for shares in received:
        if set(shares) != cells:
            raise ValueError("the parties shared different cells")
        for cell, y in shares.items():
            if not 0 <= y < prime:
                raise ValueError(f"share for {cell!r} is outside 0..prime-1")
    return {cell: sum(shares[cell] for shares in received) % prime for cell in received[0]}


def combine_counts(
    share_dicts: Mapping[int, Mapping[str, int]], *, prime: int = PRIME
) -> dict[str, int]:
    """Every cell reconstructed from ``{x: {cell: y}}``, the published sums of
    at least ``threshold`` parties."""
    if not share_dicts:
        raise ValueError("no shares given")
    first = next(iter(share_dicts.values()))
    cells = set(first)
    for shares in share_dicts.values():
        if set(shares) != cells:
            raise ValueError("the parties' shares cover different cells")
    return {
        cell: combine([(x, shares[cell]) for x, shares in share_dicts.items()], prime=prime)
        for cell in first
    }
