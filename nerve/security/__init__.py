"""Authorization (ACLs) and client quotas, with Kafka's names and semantics."""
