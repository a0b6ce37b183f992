"""Twin models: Kalman filters, machine/patient twins, fallback failure model, NEWS2-like score, what-if."""
