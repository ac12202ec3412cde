"""Tiny Gymnasium envs with known answers, for tests."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CounterEnv(gym.Env):
    """Observes ``[episode_id, t]``; ends after ``length`` steps, by termination or truncation.

    Every stored transition of a correct loop has ``next_obs == obs + [0, 1]``:
    a transition that crossed an autoreset would change the episode id.
    """

    def __init__(self, length: int = 3, truncate: bool = False, reward=1.0):
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.length = length
        self.truncate = truncate
        self.reward = reward
        self.episode = -1

    def _obs(self):
        return np.array([self.episode, self.t], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        reward = self.reward(self.t) if callable(self.reward) else self.reward
        return self._obs(), float(reward), done and not self.truncate, done and self.truncate, {}


class ContinuousActionEnv(CounterEnv):
    def __init__(self):
        super().__init__()
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)


class ImageEnv(CounterEnv):
    def __init__(self):
        super().__init__()
        self.observation_space = spaces.Box(0, 255, (84, 84, 4), np.uint8)

    def _obs(self):
        return np.zeros((84, 84, 4), np.uint8)
