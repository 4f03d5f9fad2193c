"""Measuring a model: metrics, likelihood bounds, probes, code statistics and figures."""
