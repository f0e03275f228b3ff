"""Reliability suite: a real `otelpg run` attacked the way a buggy service, an attacker and a bad
day would, printing for each scenario what clients saw acknowledged vs what PostgreSQL stored.

    python -m tests.reliability [--quick] [--only NAME ...]
    pytest tests/reliability            # the quick form, one test per scenario

Everything runs on loopback: a PostgreSQL of the suite's own (or OTELPG_TEST_DATABASE_URL, one
fresh schema per scenario), a ChaosProxy between otelpg and it for instant outages, otelpg as a
subprocess on ports 0. See scenarios.py for the list.
"""
