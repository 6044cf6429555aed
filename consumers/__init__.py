"""Kafka input side."""
