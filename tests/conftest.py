import os

# Tests share the machine with measurement runs; keep TVM and torch on one thread.
os.environ.setdefault("TVM_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
