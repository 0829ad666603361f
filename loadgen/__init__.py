"""Load generation: Locust users per endpoint API, stage scheduling, records, Prometheus exporter.

Runs in its own processes and imports ``locust`` (gevent monkey-patching) before anything that
touches ssl/asyncio; nothing outside this package imports it.
"""
