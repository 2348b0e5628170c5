"""Rows to model inputs: prompt rendering and tokenization into Arrow."""
