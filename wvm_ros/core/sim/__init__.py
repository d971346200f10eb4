"""PushT simulation: `PushTSim` (gym-pusht wrapper) and `ScriptedPushTPolicy` (scripted
controller with injected hesitation / retry / random / stuck behaviour)."""
from wvm_ros.core.sim.pusht import GOAL_POSE, STATE_NAMES, PushTSim, StepResult
from wvm_ros.core.sim.scripted import INJECTION_KINDS, SEGMENT_KINDS, Injection, ScriptedPushTPolicy

__all__ = [
    "GOAL_POSE", "STATE_NAMES", "PushTSim", "StepResult",
    "INJECTION_KINDS", "SEGMENT_KINDS", "Injection", "ScriptedPushTPolicy",
]
