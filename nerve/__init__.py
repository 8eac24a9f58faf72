"""nerve: a durable single-node event-streaming broker that speaks the Kafka wire protocol."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # Lazy, so `import nerve` stays cheap for tools that only need the version.
    if name == "Broker":
        from nerve.broker import Broker

        return Broker
    raise AttributeError(name)


__all__ = ["Broker", "__version__"]
