"""The chaos harness: faults injected into real worker, producer and redis-server processes, and a
history checker over what every process recorded (``python -m bench.chaos --help``).

Modules: `records` (the JSON-lines records each process appends), `history` (the checker: pure
functions over records), `app` (the worker app), `producer` (the producer process), `faults`
(processes, kills, the fault log, redis-server), `harness` (a scenario's store, app, event
reader and final check), `scenarios` (one function per fault), `run` (the CLI).
The short run in ``tests/chaos`` calls the same scenarios with small sizes.
"""
