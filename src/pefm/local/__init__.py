"""The embedded runtime: revisions as local func-python processes behind a local traffic router.

A single-machine stand-in for Knative's routing, not a replacement for it: one process per
revision, one router per service applying the same traffic-block semantics.
"""
