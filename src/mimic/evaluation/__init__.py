"""Evaluation: predictions of every method on the evaluation queries, and their latency side by side.

- :mod:`mimic.evaluation.predict`: generation over the evaluation split, peak memory, agreement;
- :mod:`mimic.evaluation.latency`: every method timed in one process on the same batches.
"""
