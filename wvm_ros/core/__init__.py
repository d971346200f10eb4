"""ROS-free core of wvm_ros: importable without rclpy (training boxes, CI, notebooks)."""
