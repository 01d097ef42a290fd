"""Agent steps: an agent's command in a tmux session of its own, watched until it is done."""
