"""What runs inside the job: the chunk runner, broadcasts, drain, the MPI program."""
