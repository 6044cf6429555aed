"""streaminfer: Kafka in, windowed batches through a PyTorch model, results out."""
