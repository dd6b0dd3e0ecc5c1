"""The console page in a real browser."""
