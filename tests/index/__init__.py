"""Tests of the index service."""
