"""Encrypted medical records: patients, entries, keys, ciphertext store, FHIR export."""
