"""Evaluations: next-token, open-loop planning, video quality, probes, scaling laws, reports."""
