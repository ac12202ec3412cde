"""Export and MLflow serving of an agent's greedy policy (being written)."""


def export_policy(agent, filepath, format="tf_saved_model", verbose=None, **kwargs):
    raise NotImplementedError
