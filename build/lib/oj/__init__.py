"""oj's command line."""
