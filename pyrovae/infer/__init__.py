"""Inference for any (model, guide) pair: reading a pair through Pyro's traces, objectives, the recorded SVI step, the SVI run."""
