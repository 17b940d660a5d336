"""Scripted FrankaKitchen-v1 demonstrator: MuJoCo kinematics, no learning.

D4RL's kitchen data are human tele-operation logs that cannot be downloaded here, so the local
kitchen datasets (`python -m lamo_ray.collect kitchen`, `lamo_ray.domains.kitchen.collect`) come from
this controller instead. It drives the
Franka arm through the subtasks of docs/references/lamo.md "Kitchen" from the *true* simulator state
(``env.unwrapped.data``); the recorded observations are still the env's own (noisy) dict
observations, so a learner sees exactly what it would see at evaluation.

How it moves (docs/references/environment.md "Scripted control of FrankaKitchen-v1" lists what was measured to work):

- `ArmController`: one damped-least-squares step on the Jacobian of the ``end_effector`` site
  (position + orientation, per-step error caps), joints at a limit frozen and the step re-solved,
  a weak null-space pull to the rest posture, and a gravity feed-forward (``qfrc_bias / kp``:
  the env's position actuators have no gravity compensation). Action semantics of the env:
  ``ctrl = observed_qpos + 2 * 0.08 * action``, so one action unit moves a joint target 0.16 rad.
- Subtasks are lists of `Phase` waypoints computed from object poses when the phase starts (or
  every step, for the microwave door arc): light switch (closed gripper right of the lever,
  sweep left), slide cabinet (closed gripper left of the handle, push right), microwave (pinch
  the handle bar, follow the hinge arc with the gripper yaw fixed), kettle (wrist rolled 90 deg,
  grasp the handle, lift, carry, lower, release), bottom burner (pinch the knob with the wrist
  pre-rolled back so joint 7 stays inside its limit, roll the wrist forward about 1.3 rad).
- Diversity (reset is deterministic, docs/references/environment.md "Scripted control of FrankaKitchen-v1"):
  random waypoint offsets and speeds, random subtask orders chosen by the caller, Gaussian action
  noise, a perturbed start posture.

Measure it with ``python -m lamo_ray.collect kitchen --evaluate-demonstrator --episodes 20``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import mujoco
import numpy as np


# Subtasks the demonstrator can do (gymnasium_robotics / D4RL task names).
SUBTASKS: tuple[str, ...] = ("microwave", "kettle", "light switch", "slide cabinet", "bottom burner")

ARM_JOINTS = 7
ACTION_UNIT = 0.16            # rad (or m for a finger) of position target per action unit (2 * dt)
LIMIT_MARGIN = 0.03           # rad kept from each joint limit
DAMPING = 0.05                # DLS lambda
NULLSPACE_GAIN = 0.05         # pull to the rest posture, per step
MAX_ROT_STEP = 0.25           # rad of orientation error corrected per step
# Gripper orientations as end_effector site frames (columns = site x, y, z axes in world).
# At reset the site's z axis (approach) points along world +y (into the kitchen), its y axis
# (finger opening) along world +x and its x axis up.
FRONT = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def roll(angle: float) -> np.ndarray:
    """`FRONT` rotated by ``angle`` rad about the approach axis (world +y): 90 deg puts the fingers
    one above the other (to pinch a horizontal bar)."""
    c, s = np.cos(angle), np.sin(angle)
    about_y = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return about_y @ FRONT


def rotation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Axis-angle vector (3,) of ``target @ current.T`` (world frame), both 3x3 rotations."""
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, (target @ current.T).ravel())
    vel = np.empty(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


def _cap(vector: np.ndarray, limit: float) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector if norm <= limit else vector * (limit / norm)


@dataclass
class ArmController:
    """End-effector pose -> 9-dim FrankaKitchen action, one DLS step per env step.

    Args:
        env: a FrankaKitchen-v1 env (its ``unwrapped.model`` / ``data`` are read, never written).
        rest: rest posture (7,) for the null-space pull; default the reset posture.
    """

    env: gym.Env
    rest: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.model = self.env.unwrapped.model
        self.data = self.env.unwrapped.data
        self.site = self.model.site("end_effector").id
        self.limits = self.model.jnt_range[:ARM_JOINTS].copy()
        self.kp = self.model.actuator_gainprm[:9, 0].copy()
        # Joint damping over kp is the servo's time constant (0.115 s for joints 1-4, 0.083 s for
        # 5-7, against 0.08 s steps): offsetting the target by dq * damping / (kp * dt) moves the
        # joint by about dq within the step instead of lagging behind.
        dt = self.env.unwrapped.robot_env.dt
        self.velocity_gain = self.model.dof_damping[:ARM_JOINTS] / (self.kp[:ARM_JOINTS] * dt)
        if self.rest is None:
            self.rest = self.env.unwrapped.robot_env.init_qpos[:ARM_JOINTS].copy()

    @property
    def position(self) -> np.ndarray:
        """End-effector site position (3,), metres, world frame."""
        return self.data.site_xpos[self.site].copy()

    @property
    def rotation(self) -> np.ndarray:
        """End-effector site frame (3, 3)."""
        return self.data.site_xmat[self.site].reshape(3, 3).copy()

    def joint_step(self, target_pos: np.ndarray, target_rot: np.ndarray, max_step: float,
                   posture_gain: float = NULLSPACE_GAIN) -> np.ndarray:
        """Joint displacement (7,) rad toward the target pose: DLS on the site Jacobian with the
        position error capped at ``max_step`` m and the rotation error at `MAX_ROT_STEP` rad;
        joints that would pass a limit are frozen and the step re-solved."""
        jacp = np.zeros((3, self.model.nv))
        jacr = np.zeros((3, self.model.nv))
        mujoco.mj_jacSite(self.model, self.data, jacp, jacr, self.site)
        jac = np.vstack([jacp, jacr])[:, :ARM_JOINTS]                       # (6, 7)
        error = np.concatenate([_cap(target_pos - self.position, max_step),
                                _cap(rotation_error(self.rotation, target_rot), MAX_ROT_STEP)])
        q = self.data.qpos[:ARM_JOINTS]
        free = np.ones(ARM_JOINTS, dtype=bool)
        for _ in range(ARM_JOINTS):
            j = jac[:, free]
            pinv = j.T @ np.linalg.inv(j @ j.T + DAMPING**2 * np.eye(6))     # (n_free, 6)
            dq = np.zeros(ARM_JOINTS)
            dq[free] = pinv @ error
            null = (np.eye(int(free.sum())) - pinv @ j) @ (posture_gain * (self.rest - q)[free])
            dq[free] += null
            low, high = self.limits[:, 0] + LIMIT_MARGIN, self.limits[:, 1] - LIMIT_MARGIN
            blocked = free & (((q + dq) < low) & (dq < 0) | ((q + dq) > high) & (dq > 0))
            if not blocked.any():
                break
            free &= ~blocked
        return dq

    def action(self, target_pos: np.ndarray, target_rot: np.ndarray, grip: float, max_step: float,
               posture_gain: float = NULLSPACE_GAIN) -> np.ndarray:
        """The env action (9,) float32 in [-1, 1]: arm step + gravity feed-forward, fingers
        driven toward ``grip`` (1 open, 0 closed: full squeeze)."""
        dq = self.joint_step(target_pos, target_rot, max_step, posture_gain)
        feed_forward = self.data.qfrc_bias[:9] / self.kp
        action = np.empty(9)
        action[:ARM_JOINTS] = (dq * self.velocity_gain + feed_forward[:ARM_JOINTS]) / ACTION_UNIT
        action[ARM_JOINTS:] = 1.0 if grip > 0.5 else -1.0
        return np.clip(action, -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- subtasks


@dataclass
class Phase:
    """One waypoint of a subtask.

    Attributes:
        target: end-effector goal position (3,), or a function of the controller giving it; the
            function is evaluated once when the phase starts (e.g. "10 cm behind where the
            gripper is now"), or every step when ``moving`` (e.g. the microwave handle's arc).
        rot: goal site frame (3, 3).
        grip: 1 open, 0 closed.
        tol: the phase ends once the end effector is within ``tol`` m of the target ...
        until: ... or once this condition holds (replaces the distance test when given) ...
        max_steps: ... or after this many steps.
        speed: cap on the per-step position error, m.
        min_steps: steps to stay in the phase at least (e.g. to let the fingers close).
        posture_gain: null-space pull to the rest posture per step (stronger in transit phases
            that must undo the arm configuration a previous subtask left).
    """

    target: np.ndarray | Callable[[ArmController], np.ndarray]
    rot: np.ndarray
    grip: float
    tol: float = 0.02
    until: Callable[[ArmController], bool] | None = None
    max_steps: int = 40
    speed: float = 0.05
    min_steps: int = 0
    posture_gain: float = NULLSPACE_GAIN
    moving: bool = False
    _fixed: np.ndarray | None = field(default=None, init=False, repr=False)

    def goal(self, arm: ArmController) -> np.ndarray:
        if not callable(self.target):
            return self.target
        if self.moving:
            return self.target(arm)
        if self._fixed is None:
            self._fixed = np.asarray(self.target(arm), dtype=float)
        return self._fixed

    def done(self, arm: ArmController, steps: int) -> bool:
        if steps < self.min_steps:
            return False
        if steps >= self.max_steps:
            return True
        if self.until is not None:
            return self.until(arm)
        return float(np.linalg.norm(arm.position - self.goal(arm))) < self.tol


def _stay(arm: ArmController) -> np.ndarray:
    return arm.position


def _back(offset: Sequence[float]) -> Callable[[ArmController], np.ndarray]:
    """Target ``offset`` m from where the gripper is when the phase starts."""
    return lambda arm: arm.position + np.asarray(offset)


def _qpos(arm: ArmController, joint: str) -> float:
    return float(arm.data.qpos[arm.model.jnt_qposadr[arm.model.joint(joint).id]])


def _site(arm: ArmController, name: str) -> np.ndarray:
    return arm.data.site_xpos[arm.model.site(name).id].copy()


def _jitter(rng: np.random.Generator, scale: float) -> np.ndarray:
    return rng.uniform(-scale, scale, size=3)


def light_switch_phases(arm: ArmController, rng: np.random.Generator, jitter: float) -> list[Phase]:
    """Closed gripper to the right of the lever, then sweep left (switch joint to about -0.7)."""
    lever = _site(arm, "light_site") + np.array([0.0, -0.01, 0.0])
    start = lever + np.array([0.07, 0.0, 0.0]) + _jitter(rng, jitter) * [0.3, 0.3, 0.5]
    return [
        Phase(start + [0.0, -0.12, 0.0], FRONT, grip=0, tol=0.04),
        Phase(start, FRONT, grip=0, tol=0.015, max_steps=25),
        Phase(start + [-0.22, 0.0, 0.0], FRONT, grip=0, speed=0.03, max_steps=30,
              until=lambda a: _qpos(a, "light_switch") < -0.6),
        Phase(_back([0.0, -0.1, 0.0]), FRONT, grip=0, tol=0.03, max_steps=8),
    ]


def slide_cabinet_phases(arm: ArmController, rng: np.random.Generator, jitter: float) -> list[Phase]:
    """Closed gripper to the left of the handle, then push right (slide joint to about 0.3)."""
    handle = _site(arm, "slide_site")
    start = handle + np.array([-0.07, 0.0, 0.0]) + _jitter(rng, jitter) * [0.3, 0.3, 1.0]
    return [
        Phase(start + [0.0, -0.14, 0.0], FRONT, grip=0, tol=0.04),
        Phase(start, FRONT, grip=0, tol=0.015, max_steps=25),
        Phase(start + [0.32, 0.0, 0.0], FRONT, grip=0, speed=0.035, max_steps=30,
              until=lambda a: _qpos(a, "slide_cabinet") > 0.3),
        Phase(_back([0.0, -0.1, 0.0]), FRONT, grip=0, tol=0.03, max_steps=8),
    ]


def microwave_phases(arm: ArmController, rng: np.random.Generator, jitter: float) -> list[Phase]:
    """Pinch the vertical handle bar from the front, pull it along the hinge arc to about
    -0.9 rad keeping the gripper yaw fixed (turning with the door lets the bar slip), release."""
    model, data = arm.model, arm.data
    hinge = model.joint("microwave").id
    anchor, axis = data.xanchor[hinge].copy(), data.xaxis[hinge].copy()
    handle = _site(arm, "microhandle_site") + _jitter(rng, jitter) * [0.0, 0.0, 1.5]
    lever = handle - anchor
    angle0 = _qpos(arm, "microwave")
    open_to = -0.85 + rng.uniform(-0.05, 0.05)

    def on_arc(a: ArmController) -> np.ndarray:
        # the grasp point at a door angle a little ahead of the current one
        target = max(_qpos(a, "microwave") - 0.25, open_to)
        quat = np.empty(4)
        mujoco.mju_axisAngle2Quat(quat, axis, target - angle0)
        rotated = np.empty(3)
        mujoco.mju_rotVecQuat(rotated, lever, quat)
        return anchor + rotated

    return [
        Phase(handle + [0.0, -0.12, 0.0], FRONT, grip=1, tol=0.03),
        Phase(handle + [0.0, 0.005, 0.0], FRONT, grip=1, tol=0.012, max_steps=25, speed=0.03),
        Phase(handle + [0.0, 0.005, 0.0], FRONT, grip=0, max_steps=4, min_steps=4),
        Phase(on_arc, FRONT, grip=0, speed=0.04, max_steps=40, moving=True,
              until=lambda a: _qpos(a, "microwave") < open_to + 0.17),
        Phase(_stay, FRONT, grip=1, max_steps=3, min_steps=3),
        Phase(_back([0.0, -0.06, 0.04]), FRONT, grip=1, tol=0.02, max_steps=8),
    ]


def kettle_phases(arm: ArmController, rng: np.random.Generator, jitter: float) -> list[Phase]:
    """Wrist rolled 90 deg, grasp the handle from the front, lift, carry to the goal burner,
    lower, release, back off."""
    grasp_rot = roll(-np.pi / 2)
    handle = _site(arm, "kettle_site") + _jitter(rng, jitter) * [1.0, 0.0, 0.3]
    kettle_pos = arm.data.qpos[23:26].copy()
    goal = np.array([-0.23, 0.75, 1.62]) + _jitter(rng, jitter) * [1.0, 1.0, 0.0]
    carry = handle + (goal - kettle_pos)
    lift = np.array([0.0, 0.0, 0.10])
    return [
        Phase(handle + [0.0, -0.13, 0.03], grasp_rot, grip=1, tol=0.03),
        Phase(handle + [0.0, 0.0, 0.0], grasp_rot, grip=1, tol=0.012, max_steps=25, speed=0.03),
        Phase(handle, grasp_rot, grip=0, max_steps=5, min_steps=5),
        Phase(handle + lift, grasp_rot, grip=0, tol=0.03, speed=0.03),
        Phase(carry + lift, grasp_rot, grip=0, tol=0.03, speed=0.04),
        Phase(carry + [0.0, 0.0, 0.02], grasp_rot, grip=0, tol=0.02, speed=0.03, max_steps=20),
        Phase(_stay, grasp_rot, grip=1, max_steps=4, min_steps=4),
        Phase(_back([0.0, -0.12, 0.0]), grasp_rot, grip=1, tol=0.02, speed=0.03, max_steps=15),
        Phase(_back([0.0, 0.0, 0.08]), grasp_rot, grip=1, tol=0.03, max_steps=6),
    ]


def bottom_burner_phases(arm: ArmController, rng: np.random.Generator, jitter: float) -> list[Phase]:
    """Grasp the bottom-left knob from the front with the wrist pre-rolled back, then roll the
    wrist forward until the knob reads -0.85 (a positive roll about world +y turns the knob, whose
    joint axis is -y, negative). Pre-rolling keeps joint 7 inside its limit for the whole turn;
    the knob's near-square cross-section can be pinched at any roll."""
    knob = _site(arm, "knob2_site") + np.array([0.0, -0.03, 0.0])
    start, turn = -0.45, 1.3 + rng.uniform(-0.05, 0.1)
    done = lambda a: _qpos(a, "knob_Joint_2") < -0.85  # noqa: E731
    return [
        Phase(knob + [0.0, -0.12, 0.0], roll(start), grip=1, tol=0.03, min_steps=8, posture_gain=0.3),
        Phase(knob, roll(start), grip=1, tol=0.008, max_steps=25, speed=0.03),
        Phase(knob, roll(start), grip=0, max_steps=5, min_steps=5),
        Phase(knob, roll(start + turn * 0.5), grip=0, max_steps=10, until=done),
        Phase(knob, roll(start + turn), grip=0, max_steps=12, until=done),
        Phase(knob, roll(start + turn), grip=0, max_steps=3, min_steps=3),
        Phase(knob, roll(start + turn), grip=1, max_steps=3, min_steps=3),
        Phase(_back([0.0, -0.1, 0.0]), FRONT, grip=1, tol=0.03, max_steps=10),
    ]


SUBTASK_PHASES: dict[str, Callable[[ArmController, np.random.Generator, float], list[Phase]]] = {
    "microwave": microwave_phases,
    "kettle": kettle_phases,
    "light switch": light_switch_phases,
    "slide cabinet": slide_cabinet_phases,
    "bottom burner": bottom_burner_phases,
}


@dataclass
class KitchenDemonstrator:
    """Policy ``obs -> action`` doing ``subtasks`` in order on ``env`` (FrankaKitchen-v1).

    Observations are ignored: the controller reads the true state from ``env.unwrapped.data``.
    Call `reset` after each ``env.reset``. After the last subtask it holds the arm still.

    Args:
        env: the env being stepped.
        subtasks: names from `SUBTASKS`, done in this order.
        rng: source of waypoint jitter, speeds and action noise.
        noise_std: Gaussian action-noise std (actions are clipped to [-1, 1]).
        jitter: half-width in m of the uniform random offsets of waypoints (0: none).

    Raises:
        ValueError: an unknown subtask name.
    """

    env: gym.Env
    subtasks: Sequence[str]
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    noise_std: float = 0.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        unknown = [t for t in self.subtasks if t not in SUBTASK_PHASES]
        if unknown:
            raise ValueError(f"unknown kitchen subtasks {unknown}; known: {', '.join(SUBTASKS)}")
        self.arm = ArmController(self.env)
        self.reset()

    def reset(self) -> None:
        self.queue = list(self.subtasks)
        self.phases: list[Phase] = []
        self.steps = 0
        self.speed_scale = float(self.rng.uniform(0.8, 1.15)) if self.jitter > 0 else 1.0
        self.hold_pos: np.ndarray | None = None
        self._current: str | None = None

    @property
    def current_subtask(self) -> str | None:
        """The subtask being done (None once all are done)."""
        return self._current

    def __call__(self, obs=None) -> np.ndarray:
        """The next action (9,) float32."""
        phase = self._phase()
        if phase is None:
            if self.hold_pos is None:
                self.hold_pos = self.arm.position
            action = self.arm.action(self.hold_pos, self.arm.rotation, grip=1, max_step=0.02)
        else:
            action = self.arm.action(phase.goal(self.arm), phase.rot, phase.grip,
                                     phase.speed * self.speed_scale, phase.posture_gain)
            self.steps += 1
        if self.noise_std > 0:
            action = np.clip(action + self.noise_std * self.rng.standard_normal(9), -1.0, 1.0).astype(np.float32)
        return action

    def _phase(self) -> Phase | None:
        while True:
            if self.phases and self.phases[0].done(self.arm, self.steps):
                self.phases.pop(0)
                self.steps = 0
            if self.phases:
                return self.phases[0]
            if not self.queue:
                self._current = None
                return None
            self._current = self.queue.pop(0)
            self.phases = SUBTASK_PHASES[self._current](self.arm, self.rng, self.jitter)
            self.steps = 0


# --------------------------------------------------------------------------- episodes


def perturb_start(env: gym.Env, rng: np.random.Generator, arm: float = 0.1, kettle: float = 0.02) -> dict:
    """Randomise the start after ``env.reset``: arm joints +-``arm`` rad (within their limits),
    kettle +-``kettle`` m in x and y. Returns the observation of the perturbed state.

    FrankaKitchen's reset is deterministic (docs/references/environment.md "Scripted control of FrankaKitchen-v1"),
    so this is where initial-state diversity comes from.
    """
    kitchen = env.unwrapped
    model, data = kitchen.model, kitchen.data
    low, high = model.jnt_range[:ARM_JOINTS, 0], model.jnt_range[:ARM_JOINTS, 1]
    data.qpos[:ARM_JOINTS] = np.clip(data.qpos[:ARM_JOINTS] + rng.uniform(-arm, arm, ARM_JOINTS), low, high)
    data.qpos[23:25] += rng.uniform(-kettle, kettle, 2)  # kettle free joint x, y
    data.qvel[:] = 0.0
    data.ctrl[:ARM_JOINTS] = data.qpos[:ARM_JOINTS]
    mujoco.mj_forward(model, data)
    return kitchen._get_obs(kitchen.robot_env._get_obs())


def _copy_obs(obs: dict) -> dict:
    return {key: ({k: np.array(v, dtype=np.float64) for k, v in value.items()} if isinstance(value, dict)
                  else np.array(value, dtype=np.float64)) for key, value in obs.items()}


def _stack(observations: list[dict]) -> dict:
    """List of (T+1) dict observations -> dict of stacked arrays, the Minari episode layout."""
    out: dict = {}
    for key, value in observations[0].items():
        if isinstance(value, dict):
            out[key] = {k: np.stack([o[key][k] for o in observations]) for k in value}
        else:
            out[key] = np.stack([o[key] for o in observations])
    return out


@dataclass
class DemoEpisode:
    """One demonstrator episode.

    Attributes:
        observations: dict of stacked arrays, ``observation (T+1, 59)``, ``achieved_goal`` /
            ``desired_goal`` ``{task: (T+1, k)}`` (Minari's layout of D4RL/kitchen episodes).
        actions: ``(T, 9)`` float32; rewards ``(T,)``; terminations, truncations ``(T,)`` bool.
        completions: ``{subtask: step}`` at which the env counted each completed subtask
            (``info["step_task_completions"]``), for the env's task list only.
    """

    observations: dict
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    completions: dict[str, int]

    def buffer_fields(self) -> dict:
        """Keyword arguments for `minari.data_collector.EpisodeBuffer`."""
        return {"observations": self.observations, "actions": self.actions, "rewards": self.rewards,
                "terminations": self.terminations, "truncations": self.truncations}


def run_demo_episode(env: gym.Env, subtasks: Sequence[str], seed: int, rng: np.random.Generator,
                     noise_std: float = 0.0, jitter: float = 0.0, perturb: bool = True) -> DemoEpisode:
    """Reset ``env`` with ``seed``, optionally perturb the start, and run `KitchenDemonstrator`
    over ``subtasks`` until the env terminates (all of its tasks done) or truncates (280 steps)."""
    obs, _ = env.reset(seed=seed)
    if perturb:
        obs = perturb_start(env, rng)
    demonstrator = KitchenDemonstrator(env, subtasks, rng=rng, noise_std=noise_std, jitter=jitter)
    observations, actions, rewards, terminations, truncations = [_copy_obs(obs)], [], [], [], []
    completions: dict[str, int] = {}
    done = False
    while not done:
        action = demonstrator(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(_copy_obs(obs))
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
        for task in info.get("step_task_completions", []):
            completions.setdefault(task, len(actions))
        done = terminated or truncated
    return DemoEpisode(_stack(observations), np.asarray(actions, dtype=np.float32), np.asarray(rewards),
                       np.asarray(terminations), np.asarray(truncations), completions)


@dataclass
class DemonstratorReport:
    """Success of the demonstrator over ``episodes`` episodes of one subtask sequence.

    Attributes:
        subtasks: the sequence attempted, in order.
        success: per subtask, the share of episodes in which the env counted it.
        sequence_success: share of episodes with every subtask done.
        mean_steps: mean steps to finish the whole sequence, over the episodes that did.
        seconds_per_episode: wall time per episode.
    """

    subtasks: tuple[str, ...]
    episodes: int
    success: dict[str, float]
    sequence_success: float
    mean_steps: float
    seconds_per_episode: float


def evaluate_demonstrator(subtasks: Sequence[str], episodes: int = 20, seed: int = 0, noise_std: float = 0.0,
                          jitter: float = 0.0, perturb: bool = True) -> DemonstratorReport:
    """Run the demonstrator on ``subtasks`` (env task list = ``subtasks``, D4RL reward and
    termination, 280 steps) from ``episodes`` random initial states (`perturb_start`)."""
    import time

    from lamo_ray.domains.kitchen import ENV_ID, KITCHEN

    env = KITCHEN.make_env(ENV_ID, tasks_to_complete=list(subtasks))
    rng = np.random.default_rng(seed)
    began = time.perf_counter()
    done_counts = {task: 0 for task in subtasks}
    full, steps = 0, []
    for episode in range(episodes):
        result = run_demo_episode(env, subtasks, seed + episode, rng, noise_std, jitter, perturb)
        for task in result.completions:
            done_counts[task] += 1
        if len(result.completions) == len(subtasks):
            full += 1
            steps.append(max(result.completions.values()))
    seconds = time.perf_counter() - began
    env.close()
    return DemonstratorReport(tuple(subtasks), episodes, {t: c / episodes for t, c in done_counts.items()},
                              full / episodes, float(np.mean(steps)) if steps else float("nan"), seconds / episodes)
