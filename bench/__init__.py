"""``streaminfer bench``: how fast the pipeline is, next to the strongest baselines, in one run.

Developer tooling, not the data path: nothing under ``pipeline``, ``consumers``,
``producers`` or ``schemas`` imports it. Each part measures one contender on this
machine, side by side with its baselines in the same run (the machine is shared and
noisy): repetitions are interleaved and reported as min/median/max.

- ``model``: the model alone, in process, over batch sizes and thread counts, with
  decoding and preprocessing and without (the model ceiling).
- ``kafka``: consume -> produce identity through the same broker and topics, the Kafka
  client at its best settings, no model (the Kafka ceiling).
- ``naive``: consume one, infer, produce, await, commit: a plain loop written well.
- ``drain``: ``streaminfer worker`` processes draining a backlog (throughput).
- ``latency``: open-loop input at fixed fractions of a worker's capacity (end to end,
  broken down by stage from each result's timings), adaptive against fixed batching.
- ``mixed``: transaction latency while frames flow through the same worker.
"""
