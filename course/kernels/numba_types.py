"""numba types shared by the kernels.

``U64`` is ``numba.uint64``: loop indices and offsets cast to it make numba drop its
negative-index (wraparound) checks, so the loops vectorize. Imported as ``_U`` by the
kernels that use it.
"""

import numba

U64 = numba.uint64
