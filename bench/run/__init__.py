"""The run machinery: a grid file becomes records on disk.

``grid`` (parse, expand once into a plan), ``validate`` (names and values, before any work),
``preflight`` (datasets, components, weights, pools, before any training), ``runner`` (the driver:
lock, plan, the only writer of records), ``work`` (the worker side: one unit -> one outcome per
cell), ``executors`` (local, Ray), ``cache`` (trained encoders, fitted detectors), ``store``
(records), ``provenance`` (versions, git SHA, host).

May import: ``bench.metrics``, ``methods``, ``datasets``, and two pure-numpy leaves of
``bench.analysis``: ``adequacy`` (judged at fit time, while the model is alive, stored in each
record) and ``claims`` (claim files are checked with the grid, before any work). Never
``bench.report`` or the rest of ``bench.analysis``.
"""
