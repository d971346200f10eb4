"""Thin helpers shared by the ROS nodes (message conversion, QoS, diagnostics)."""
