"""Faults under load: a real PostgreSQL + NATS deployment, a mixed workload, faults, then invariants.

`python -m tests.faults --help` runs it by hand (and `make soak`, `make faults`); test_faults.py is the
short form CI runs. See harness.py for the order of things.
"""
