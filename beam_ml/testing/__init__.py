"""Helpers shared by the tests and the local demos: a real Kafka-compatible broker.

    from beam_ml.testing import TansuBroker
    with TansuBroker() as broker:
        broker.create_topic("transactions", partitions=3)
        ...  # point pipelines at broker.bootstrap_servers
"""
from beam_ml.testing.broker import TansuBroker, create_topic, find_free_port, read_topic, tansu_binary

__all__ = ["TansuBroker", "create_topic", "find_free_port", "read_topic", "tansu_binary"]
