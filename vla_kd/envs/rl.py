"""Contract envs made ready for on-policy RL with stable-baselines3.

The observation stays a ``Dict`` holding everything either side needs: the student reads some
keys (``state`` + ``privileged`` for a state student, ``rgb`` + ``state`` for a visual one) and
the teacher reads others (a VLA wants ``rgb`` + ``state``). Both live in SB3's rollout buffer,
so the teacher can label the student's own states once per rollout. Images are stored
channel-first, which is what SB3's CNNs take (and keeps SB3 from adding its own transpose).
"""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from vla_kd.envs import make_env
from vla_kd.envs.base import TaskId


def rl_spaces(space: gym.spaces.Dict, keys: tuple[str, ...]) -> dict[str, gym.Space]:
    """The spaces of ``keys`` of a contract observation space, ``rgb`` made channel-first."""
    spaces = {}
    for key in keys:
        if key == "rgb":
            h, w, c = space[key].shape
            spaces[key] = gym.spaces.Box(0, 255, shape=(c, h, w), dtype=np.uint8)
        else:
            spaces[key] = space[key]
    return spaces


def rl_from_contract(obs: dict, keys: tuple[str, ...]) -> dict:
    """``keys`` of a contract observation (one env's or a batch's), ``rgb`` made channel-first."""
    out = {k: obs[k] for k in keys}
    if "rgb" in out:
        out["rgb"] = np.ascontiguousarray(np.moveaxis(np.asarray(out["rgb"]), -1, -3))
    return out


class RLObservation(gym.ObservationWrapper):
    """Keeps ``keys`` of a contract observation (``rgb`` turned channel-first) and reports
    ``info["is_success"]``, which SB3 reads to track the rollout success rate.

    ``image_every = k > 1`` renders the camera only at episode steps 0, k, 2k, ... (other
    frames are zeros) and adds ``rgb_fresh`` (1 where the frame was rendered): a teacher that
    executes k-action chunks looks at no other frame, and rendering is most of a CPU step.
    """

    def __init__(self, env: gym.Env, keys: tuple[str, ...], image_every: int = 1) -> None:
        super().__init__(env)
        if image_every > 1 and not hasattr(env.unwrapped, "render_next_observation"):
            raise ValueError(f"{type(env.unwrapped).__name__} cannot skip camera frames (image_every > 1)")
        self.image_every, self._t = image_every, 0
        missing = [k for k in keys if k not in env.observation_space.spaces]
        if missing:
            raise ValueError(
                f"the env observation has no {missing}; it has {list(env.observation_space.spaces)}"
            )
        spaces = rl_spaces(env.observation_space, keys)
        if self.image_every > 1:
            spaces["rgb_fresh"] = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self.keys = keys

    def observation(self, observation: dict) -> dict:
        out = rl_from_contract(observation, self.keys)
        if self.image_every > 1:
            out["rgb_fresh"] = np.array([self._t % self.image_every == 0], np.float32)
        return out

    def reset(self, **kwargs):
        self._t = 0
        if self.image_every > 1:
            self.env.unwrapped.render_next_observation = True
        return super().reset(**kwargs)

    def step(self, action):
        if self.image_every > 1:
            self.env.unwrapped.render_next_observation = (self._t + 1) % self.image_every == 0
        self._t += 1
        obs, reward, terminated, truncated, info = super().step(action)
        info["is_success"] = bool(info.get("success", False))
        return obs, reward, terminated, truncated, info


def repeat_box(space: gym.spaces.Box, k: int) -> gym.spaces.Box:
    """``k`` copies of a flat Box side by side: the action space of a k-action chunk."""
    return gym.spaces.Box(np.tile(space.low, k), np.tile(space.high, k), dtype=space.dtype)


class ActionChunk(gym.Wrapper):
    """One step executes a chunk of ``k`` actions open-loop: the action is ``(k * 7,)``, the
    reward the sum over the executed steps, and a chunk stops early where the episode ends.

    This lets an RL student act as a chunked teacher does (a TokenVLA executes its 8-action
    chunks), so the teacher's label for a student state is the chunk it predicts from that
    very state. ``info["executed_steps"]`` counts the env steps; ``info["is_success"]`` is
    true if any executed step succeeded."""

    def __init__(self, env: gym.Env, k: int) -> None:
        super().__init__(env)
        self.k, self.single = k, env.action_space.shape[0]
        self.action_space = repeat_box(env.action_space, k)

    def step(self, action):
        actions = np.asarray(action).reshape(self.k, self.single)
        total, succeeded, executed = 0.0, False, 0
        for single in actions:
            obs, reward, terminated, truncated, info = self.env.step(single)
            total, executed = total + float(reward), executed + 1
            succeeded |= bool(info.get("is_success", False))
            if terminated or truncated:
                break
        info = {**info, "executed_steps": executed, "is_success": succeeded}
        return obs, total, terminated, truncated, info


def executed_steps(infos) -> int:
    """Env steps a vectorised step executed: ``info["executed_steps"]`` per env (a chunk may
    stop early at an episode end), 1 for an env without :class:`ActionChunk`."""
    return sum(int(info.get("executed_steps", 1)) for info in infos)


def make_rl_env(
    task: str, keys: tuple[str, ...], image_every: int = 1, action_chunk: int = 1, **env_kwargs
) -> gym.Env:
    """One training env: the contract env for ``task`` wrapped by :class:`RLObservation`, and
    by :class:`ActionChunk` when ``action_chunk > 1``."""

    env = RLObservation(make_env(task, **env_kwargs), keys, image_every)
    return ActionChunk(env, action_chunk) if action_chunk > 1 else env


def make_rl_vec_env(
    task: str,
    keys: tuple[str, ...],
    num_envs: int,
    seed: int,
    image_every: int = 1,
    action_chunk: int = 1,
    **env_kwargs,
):
    """``num_envs`` training envs as an SB3 VecEnv (subprocess workers when more than one:
    ManiSkill's CPU sim runs one env per process), seeded ``seed, seed + 1, ...``."""

    TaskId.parse(task)
    factories = [
        partial(make_rl_env, task, keys, image_every, action_chunk, **env_kwargs) for _ in range(num_envs)
    ]
    # forkserver: never fork a parent that already holds a Vulkan/EGL context.
    venv = SubprocVecEnv(factories, start_method="forkserver") if num_envs > 1 else DummyVecEnv(factories)
    venv.seed(seed)
    return venv


def contract_from_rl(obs: dict) -> dict:
    """A batch of RL observations (``rgb`` channel-first) back in the contract's layout."""
    out = dict(obs)
    if "rgb" in out:
        out["rgb"] = np.moveaxis(np.asarray(out["rgb"]), -3, -1)
    return out


class BatchedVecEnv(VecEnv):
    """ManiSkill's GPU-batched sim (:class:`~vla_kd.envs.maniskill_gpu.ManiSkillBatchedEnv`,
    auto-resetting, tensors on the GPU) as an SB3 VecEnv with the RL observation keys.

    SB3 computes on numpy, so observations cross to the host once per step; the finished
    episodes' last observations go to ``infos[i]["terminal_observation"]`` for bootstrapping.
    """

    def __init__(self, env, keys: tuple[str, ...]) -> None:
        spaces = rl_spaces(env.single_observation_space, keys)
        super().__init__(env.num_envs, gym.spaces.Dict(spaces), env.single_action_space)
        self.env, self.keys = env, keys
        self._actions = None

    def _numpy(self, obs: dict) -> dict:
        return rl_from_contract({k: obs[k].cpu().numpy() for k in self.keys}, self.keys)

    def reset(self):
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        self._reset_seeds()
        obs, _ = self.env.reset(seed=seed)
        return self._numpy(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, reward, terminated, truncated, info = self.env.step(self._actions)
        done = (terminated | truncated).cpu().numpy().astype(bool)
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        if done.any():
            final = self._numpy(self.env._convert(info["final_observation"]))
            success = info["final_info"]["success"].cpu().numpy()
            cut = (truncated & ~terminated).cpu().numpy()
            for i in np.flatnonzero(done):
                infos[i] = {
                    "terminal_observation": {k: v[i] for k, v in final.items()},
                    "TimeLimit.truncated": bool(cut[i]),
                    "is_success": bool(success[i]),
                }
        return self._numpy(obs), reward.cpu().numpy().astype(np.float32), done, infos

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices=None) -> list:
        return [getattr(self.env, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value, indices=None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list:
        return [getattr(self.env, method_name)(*args, **kwargs)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)
