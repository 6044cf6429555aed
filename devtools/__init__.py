"""Developer tooling, apart from the data path: the local KRaft broker the quickstart and
the tests run (``broker``, with the Kafka version it pins), and ``make demo`` (``demo``).
The benchmark suite is the ``bench`` package."""
