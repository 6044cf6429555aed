"""Result and dead-letter sinks, and the publishers for video and transactions."""
