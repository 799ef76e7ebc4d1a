"""Encrypted medical records: arrives with the records issue (see DESIGN.md)."""
