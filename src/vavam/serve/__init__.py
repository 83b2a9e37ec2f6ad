"""Serving VaVAM over NeuroNCAP's HTTP protocol: wire schemas, a client, and the model server."""
