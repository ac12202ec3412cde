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


class TwoStateChain(gym.Env):
    """Two states, two actions, deterministic, with a known optimal Q.

    State 0: action 0 stays in 0 (reward 0); action 1 moves to state 1 (reward 0).
    State 1: action 0 ends the episode with reward 1; action 1 returns to 0 (reward 0).
    With discount g: Q*(1, 0) = 1, Q*(0, 1) = g, Q*(0, 0) = Q*(1, 1) = g^2.
    """

    def __init__(self):
        self.observation_space = spaces.Discrete(2)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = 0
        return self.state, {}

    def step(self, action):
        if self.state == 1 and action == 0:
            return 1, 1.0, True, False, {}
        self.state = 1 - self.state if action == 1 else self.state
        return self.state, 0.0, False, False, {}

    @staticmethod
    def optimal_q(gamma):
        return np.array([[gamma**2, gamma], [1.0, gamma**2]])
