"""The envs an RL student trains in, and the teacher that labels them: what each reads decides
what the envs render and return."""
from __future__ import annotations

from stable_baselines3.common.vec_env import VecMonitor

from vla_kd.envs import check_task, make_env
from vla_kd.envs.rl import BatchedVecEnv, make_rl_vec_env
from vla_kd.errors import UserError
from vla_kd.policies.loading import build_policy, check_policy_spec


def teacher_keys(teacher) -> tuple[str, ...]:
    """The contract observation keys ``teacher`` reads."""
    keys = ["state"]
    if getattr(teacher, "uses_privileged", False):
        keys.append("privileged")
    config = getattr(teacher, "config", None)
    if getattr(config, "image_size", None) and getattr(config, "use_image", True):
        keys.insert(0, "rgb")
    return tuple(keys)


def load_teacher(spec: str | None, task: str, rl):
    """The teacher named by ``spec`` (``scripted`` or a saved policy folder) for ``task``, or None.

    ``rl.teacher_action_steps`` sets how many actions of each predicted chunk a chunked teacher
    executes before predicting again (None: the whole chunk, as it acts in evaluation). The
    labels follow: 1 labels every student state with the teacher's fresh first action, a
    function of that state alone; the whole chunk labels a state with the action the teacher's
    open-loop plan, made up to a chunk earlier, holds for that step."""
    if spec in (None, "", "none"):
        return None
    check_policy_spec(str(spec))
    if spec == "scripted":  # needs the task's state layout
        probe = make_env(
            task, obs_mode="state", include_privileged=True, max_episode_steps=rl.max_episode_steps
        )
        try:
            return build_policy("scripted", probe)
        finally:
            probe.close()
    steps = rl.teacher_action_steps
    return build_policy(str(spec), env=None, action_steps=None if steps is None else int(steps))


def camera_period(teacher, student_keys: tuple[str, ...], action_chunk: int = 1) -> int:
    """How often the training envs must render: every step, unless only a chunked teacher
    looks at the camera, which it does once per executed chunk (episode steps 0, k, 2k, ...);
    for a student acting in ``action_chunk``-action chunks, once per student decision."""
    if teacher is None or "rgb" in student_keys or "rgb" not in teacher_keys(teacher):
        return 1
    if action_chunk > 1:
        return action_chunk
    return int(getattr(teacher, "actions_per_chunk", 1))


def make_training_env(
    rl, sim, task: str, keys: tuple[str, ...], image_size: int, image_every: int = 1, action_chunk: int = 1,
) -> VecMonitor:
    """Vectorised training envs (``rl``: the method's config, ``sim``: the ``maniskill`` node):
    CPU subprocess workers, or ManiSkill's GPU-batched sim; ``action_chunk > 1``: each env step
    executes that many actions (CPU workers only)."""
    if check_task(task).backend != "maniskill":
        raise UserError("RL students train on ManiSkill tasks (maniskill/<Task>)")
    kwargs = dict(
        obs_mode="rgb" if "rgb" in keys else "state",
        include_privileged="privileged" in keys,
        image_size=image_size,
        max_episode_steps=rl.max_episode_steps,
        reward_mode=rl.reward_mode,
        control_mode=sim.control_mode,
        sim_backend=sim.sim_backend,
        render_backend=sim.render_backend,
    )
    if sim.sim_backend == "cpu":
        venv = make_rl_vec_env(
            task, keys, int(rl.num_envs), seed=int(rl.seed), image_every=image_every,
            action_chunk=action_chunk, **kwargs,
        )
    elif action_chunk > 1:
        raise UserError("method.action_chunk > 1 runs on the CPU sim only (maniskill=cpu)")
    else:
        from vla_kd.envs.maniskill_gpu import ManiSkillBatchedEnv  # heavy: mani_skill's GPU sim

        name = task.split("/", 1)[1]
        venv = BatchedVecEnv(ManiSkillBatchedEnv(name, int(sim.num_envs), **kwargs), keys)
        venv.seed(int(rl.seed))
    return VecMonitor(venv)
