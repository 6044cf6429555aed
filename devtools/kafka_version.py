"""The one place the Apache Kafka version is pinned.

The local broker resolves these jars from Maven Central; ``docker-compose.yml`` uses the
``apache/kafka`` image of the same version, and a test keeps the two in step.
"""

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"
KAFKA_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
