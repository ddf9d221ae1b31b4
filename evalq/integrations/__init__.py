"""Bridges from other frameworks to the fleet (each needs its own optional extra)."""
