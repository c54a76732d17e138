"""Test-wide settings: float64 is available so gradient comparisons run in it.

Library code never touches jax.config; the test session does, once. Tests of
float32 paths build float32 arrays explicitly.
"""
import jax

jax.config.update("jax_enable_x64", True)
