"""``python -m bench`` (``make bench``): the end-to-end pipeline benchmark; see
``bench/pipeline_bench.py`` and ``python -m bench --help``."""

from bench.pipeline_bench import main

main()
