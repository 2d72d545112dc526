"""Sanctum: the Textual TUI that attaches to a live run on any bus or replays one from the run store."""
