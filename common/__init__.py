"""Helpers every package may import (it imports none of them): see tests/test_layering.py."""
