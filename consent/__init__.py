"""Consent, the access log and research requests: arrive with their issues (see DESIGN.md)."""
