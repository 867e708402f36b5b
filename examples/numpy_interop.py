"""The Python half of examples/numpy_interop.rs: attach to a shmpar named segment with numpy.

    python3 examples/numpy_interop.py NAME ROWS COLS
"""
import sys

import numpy as np
from multiprocessing import resource_tracker, shared_memory

OFFSET = 128  # shmpar.NAMED_OFFSET: the array starts after shmpar's header

name, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if sys.version_info >= (3, 13):
    shm = shared_memory.SharedMemory(name=name, track=False)
else:
    shm = shared_memory.SharedMemory(name=name)
    # Before 3.13, attaching registers the segment with this process's resource tracker, which
    # would unlink the Rust owner's live segment when we exit.
    resource_tracker.unregister(shm._name, "shared_memory")
a = np.ndarray((rows, cols), dtype=np.float64, buffer=shm.buf, offset=OFFSET)
print(f"Python: sees sum = {a.sum()}, writes a[0, 0] = 100")
a[0, 0] = 100.0
del a  # release the buffer before closing
shm.close()
