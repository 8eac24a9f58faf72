"""The web console: a Starlette app over `nerve.tools.kafka` (Kafka protocol only).

`nerve serve` runs it on the broker's own event loop (nerve.console.server.start_embedded);
`nerve console --bootstrap-server HOST:PORT` runs it alone against any Kafka cluster.
"""
