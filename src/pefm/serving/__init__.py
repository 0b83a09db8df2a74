"""The ASGI apps behind the functions (ingest, inference), their metrics and request logs.

The kn func functions in ``functions/`` are thin shells around these apps, so the local runtime,
the tests and the containers all run the same code.
"""
