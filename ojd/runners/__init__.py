"""Where jobs run: each job in a process of its own, outside whoever started it."""
