"""A user's own function for prime_factors.m: hpcbridge ships this file to the workers."""


def weighted(index, weights):
    """The weight at ``index`` (MATLAB passes the items as floats) times the index."""
    return float(weights[int(index)] * index)
