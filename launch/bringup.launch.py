"""Bring up the wvm_ros graph with ROS 2 launch:

    ros2 launch wvm_ros bringup.launch.py mode:=sim task:="push the T onto the target" record:=true
    ros2 launch wvm_ros bringup.launch.py mode:=external image_topics:=/camera/camera/color/image_raw

The nodes, parameters and remappings come from `wvm_ros.graph.build_graph`, the same
function `wvm up` uses, so both start the same processes. Launch arguments: see
`wvm_ros.graph.LAUNCH_ARGUMENTS` (mode, checkpoint, success_checkpoint, task, record, params_file, output_dir,
preset, device, image_topics). mode:=external starts no camera / simulator node: run your
camera driver (realsense2_camera, usb_cam, ...) yourself, remapped onto /camera/image_raw or
named in image_topics.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from wvm_ros.graph import LAUNCH_ARGUMENTS, build_graph


def _nodes(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    specs = build_graph(**values)
    return [
        Node(
            package=s.package,
            executable=s.executable,
            name=s.name,
            parameters=[*s.params_files, s.parameters],
            remappings=s.remappings,
            output="screen",
            emulate_tty=True,
        )
        for s in specs
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc)
         for name, (default, desc) in LAUNCH_ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)]
    )
