"""Benchmarks: nerve against Apache Kafka 4.1.1 on the same machine with the same clients."""
