"""The production deployments, run for real (docker-compose; a Swarm stack later)."""
