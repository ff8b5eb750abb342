"""Reproducible throughput, latency and quality measurements against baselines."""
