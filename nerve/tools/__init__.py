"""The `nerve` commands beyond `serve` (topics, produce, consume, groups, console).

Everything here speaks only the Kafka protocol, through confluent-kafka, so the same commands
work against nerve and against any Apache Kafka cluster. `nerve.tools.kafka` is the shared
layer (also used by the web console); `nerve.tools.commands` holds the click commands.
"""
