"""Helpers for testing labelpilot and its model families (``check_model``, synthetic data); not used when serving."""
