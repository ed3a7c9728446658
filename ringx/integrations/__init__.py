"""Integrations of ``ringx`` with other frameworks; each imports its framework lazily, only when used."""
