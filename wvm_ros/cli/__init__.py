"""The `wvm` command line (see wvm_ros.cli.main)."""
