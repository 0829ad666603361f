"""fmbench_k8s/contract/_radix.c: the two passes of stats.radix_percentiles."""

import numpy as np
import numpy.typing as npt

def count_tops(values: npt.NDArray[np.float32], counts: npt.NDArray[np.int64], /) -> None: ...
def gather(
    values: npt.NDArray[np.float32], wanted: npt.NDArray[np.bool_], out: npt.NDArray[np.float32], at: int, /
) -> int: ...
