"""The project's common library: settings, events, topics, storage, Kafka and identity helpers."""
