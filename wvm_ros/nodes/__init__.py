"""ROS 2 nodes of wvm_ros, each its own process with a console-script entry point."""
