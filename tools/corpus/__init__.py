"""Helpers for tools/build_corpus.py: package fetching (fetch), R lazy-load
parsing (rdata), per-source text extraction (sources), text clean-up and
chunking (text), and the held-out evaluation tasks (tasks)."""
