"""Benchmarks: ``python -m bench`` (``make bench``) runs the pipeline benchmark
(``bench/pipeline_bench.py``); the per-service scripts (``*_bench.py``) run on their own."""
