"""`hetcache selftest`'s checks: the environment report, every kernel against its torch reference
(`kernel_checks`), and the demo edit uncached and with HetCache (`checks`).

A package of its own so that nothing on the edit path imports it: only the `selftest` command does.
"""
