"""Durable storage: the SQLite event log (truth) and the FAISS index derived from it."""
