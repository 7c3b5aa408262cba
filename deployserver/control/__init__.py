"""The control loop: the reconciler, its pure decisions, lifecycle transitions, the health gate."""
