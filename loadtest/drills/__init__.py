"""Fault drills: a surge through the real stack, one fault injected mid-surge, a verdict."""
