"""Building blocks for pairs: networks, likelihoods, priors."""
