"""What a grid costs: ``perf`` (throughput, head reuse, memory, Ray/local ratio) and ``estimate``
(a grid's wall time from recorded or measured unit times, before any work).

May import: ``bench.run``, ``bench.metrics``, ``methods``, ``datasets``.
"""
