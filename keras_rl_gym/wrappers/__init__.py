"""Gymnasium wrappers: they import Gymnasium and NumPy only, never Keras."""
