"""The torch runtime's recorded graphs: the same numbers as Keras's eager ops, and an eager fallback.

On torch each computation (act, gradient, optimizer step, target update) is recorded once as a
graph of ATen ops and replayed; these tests hold the replay to Keras's own eager execution.
They run on the torch backend only: the other runtimes compile with jax.jit and XLA.
"""

import gymnasium as gym
import keras
import numpy as np
import pytest
from keras import ops

from keras_rl_gym import DQNAgent, DRQNAgent, PPOAgent, SACAgent, TD3Agent
from keras_rl_gym.wrappers.partial import RemoveVelocity

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch runtime's recorded graphs")


def eager_only(agent):
    """Makes ``agent``'s runtime record nothing: every call goes through Keras's eager ops."""
    agent.runtime._graph = lambda *args, **kwargs: None
    return agent


CASES = [
    (DQNAgent, "CartPole-v1", dict(learning_starts=100, double=True, dueling=True, max_grad_norm=1.0)),
    (DRQNAgent, "masked", dict(hidden_sizes=(16,), lstm_size=16, sequence_length=4, learning_starts=100)),
    (PPOAgent, "CartPole-v1", dict(n_steps=64, batch_size=32, n_epochs=2)),
    (SACAgent, "Pendulum-v1", dict(learning_starts=100, actor_hidden_sizes=(32,), critic_hidden_sizes=(32,))),
    (TD3Agent, "Pendulum-v1", dict(learning_starts=100, actor_hidden_sizes=(32,), critic_hidden_sizes=(32,))),
]


@pytest.mark.parametrize("cls, env_id, kwargs", CASES, ids=[case[0].__name__ for case in CASES])
def test_recorded_graphs_train_exactly_as_keras_eager_ops(cls, env_id, kwargs, monkeypatch):
    """300 env steps of fit through the recorded graphs and through eager Keras: the same weights, bit for bit."""
    monkeypatch.setenv("KERAS_RL_GYM_TORCH_COMPILE", "0")

    def make():
        return RemoveVelocity(gym.make("CartPole-v1")) if env_id == "masked" else gym.make(env_id)

    weights = []
    for eager in (False, True):
        env = make()
        agent = cls(env.observation_space, env.action_space, seed=0, **kwargs)
        if eager:
            eager_only(agent)
        agent.fit(env, steps=300, verbose=0)
        assert agent.updates > 0
        weights.append(agent.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_fit_records_a_graph_per_signature_and_replays_it():
    env = gym.make("Pendulum-v1")
    agent = TD3Agent(env.observation_space, env.action_space, seed=0, learning_starts=50, actor_hidden_sizes=(16,))
    agent.fit(env, steps=120, verbose=0)
    graphs = agent.runtime._graphs
    # TD3: a gradient and an optimizer step for each setting of the actor's gate, the act, the target update.
    assert sorted(name for name, _ in graphs) == ["act", "apply", "apply", "gradient", "gradient", "targets"]
    assert all(graph is not None for graph in graphs.values())
    before = len(graphs)
    agent.fit(env, steps=50, verbose=0)
    assert len(agent.runtime._graphs) == before  # the same signatures: nothing recorded again


class BranchesOnData(DQNAgent):
    """A loss with Python control flow on a tensor's value: it cannot be recorded as a graph."""

    def compute_rl_loss(self, batch):
        loss, metrics = super().compute_rl_loss(batch)
        if float(ops.convert_to_numpy(ops.max(batch["reward"]))) > 1e9:
            loss = loss * 2.0
        return loss, metrics


def test_a_loss_that_cannot_be_recorded_runs_eagerly_with_a_warning():
    env = gym.make("CartPole-v1")
    agent = BranchesOnData(env.observation_space, env.action_space, seed=0, learning_starts=50)
    reference = DQNAgent(env.observation_space, env.action_space, seed=0, learning_starts=50)
    with pytest.warns(UserWarning, match="could not record BranchesOnData's gradient"):
        agent.fit(env, steps=150, verbose=0)
    reference.fit(gym.make("CartPole-v1"), steps=150, verbose=0)
    assert agent.updates == reference.updates > 0
    assert agent.runtime._graphs[next(k for k in agent.runtime._graphs if k[0] == "gradient")] is None
    # The branch is never taken here: eager and recorded updates give the same weights.
    for a, b in zip(agent.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
