"""Tests of Kasmina's pure lifecycle core."""
