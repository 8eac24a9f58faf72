"""Reference systems built on nerve the way a Kafka user would build them.

`nerve.apps.shop` (a web shop) and `nerve.apps.rides` (ride hailing): each service is its own
process with its own consumer group, talks to the broker only through confluent-kafka, and
takes `--bootstrap-server`, so the same code runs on nerve and on Apache Kafka. See
docs/demos.md.
"""
