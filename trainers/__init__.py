"""Learning algorithms (credit assignment, losses, training loops)."""
