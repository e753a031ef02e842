"""Real-time pipelines: transports, decoding, event-time windows, anomaly detectors, alerts."""
