"""idproxy_stream: cold-start proxy embeddings (IDProxy) served from a Kafka + Ray stream."""

__version__ = "0.1.0"
