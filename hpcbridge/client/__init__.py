"""The user's side: attaching to a cluster, the Bridge API, runs, losses, MATLAB."""
