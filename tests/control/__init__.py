"""Tests of the control loop: decisions, the health gate, the reconciler."""
