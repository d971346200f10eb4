"""wvm_ros: World Value Model progress for ROS 2."""
__version__ = "0.1.0"
