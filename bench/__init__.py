"""Benchmarks: throughput, SLA-timer lateness, memory, history size, projection lag and crash
behaviour of the escalation workflow, each beside a bare-Temporal baseline (and, for lateness and
crashes, a Postgres job-queue peer) measured in the same run on the same private stack.

``python -m bench [--quick] [--scenario NAME ...]`` (``make bench``); results land in
``bench/results/<date>-<scenario>.json`` and ``python -m bench report`` turns them into
``docs/benchmarks.md``.
"""
