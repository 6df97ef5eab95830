"""Importing items, users and events from files (SPEC §3) and from known data sets."""
