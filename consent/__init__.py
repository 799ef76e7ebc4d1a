"""Consent and the access log.

Today: each hospital's tamper-evident access log (who read which record of which
patient, for what purpose, allowed or denied), hash-chained per hospital and
anchored on the ledger. Policies, emergency access and requests arrive with
issue 6 (see DESIGN.md).
"""
