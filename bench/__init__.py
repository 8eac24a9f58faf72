"""Benchmarks: nerve against Apache Kafka 4.4.0 on the same machine with the same clients."""
