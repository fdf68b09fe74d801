"""Exports of the log and the views to files (DESIGN §10): ``parquet.py``."""
