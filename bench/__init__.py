"""Benchmarks: ``python -m bench`` (``make bench``) runs the issue-15 throughput benchmark
(``bench/pipeline_bench.py``: phases and CLI; ``bench/load.py``: load generators and the bare
reference; ``bench/report.py``: the ``RESULTS.md`` section; ``bench/cpu.py``: CPU per process);
``bench/send_cost.py`` and the per-service scripts (``*_bench.py``) run on their own."""
