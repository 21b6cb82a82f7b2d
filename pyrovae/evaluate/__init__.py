"""What a trained pair is worth: log p(x) by importance sampling, diagnostics, disentanglement metrics, posterior predictive checks."""
