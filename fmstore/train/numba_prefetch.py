"""`prefetch(arr, i)`: the cache-line prefetch the training kernels (numba_kernels.py) use to hide
the latency of random rows, built from numba/llvmlite internals; a no-op where they do not fit."""

from __future__ import annotations

import numpy as np
from numba import njit


def _define_prefetch():
    """`prefetch(arr, i)`: ask for the cache lines of row i of a C-contiguous 2D array before
    it is needed (the step is bound by the latency of random rows: this hides some of it).
    Built from numba/llvmlite internals; when they do not fit, prefetch does nothing."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, arr, row):
        sig = types.void(arr, row)

        def codegen(context, builder, signature, args):
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            i64 = ir.IntType(64)
            index = context.cast(builder, args[1], signature.args[1], types.intp)
            ptr = cgutils.get_item_pointer(
                context, builder, aryty, ary, [index, ir.Constant(i64, 0)], wraparound=False
            )
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                "llvm.prefetch.p0i8",
            )
            base = builder.bitcast(ptr, i8p)
            width = cgutils.unpack_tuple(builder, ary.shape, aryty.ndim)[1]
            nbytes = builder.mul(width, ir.Constant(i64, aryty.dtype.bitwidth // 8))
            with cgutils.for_range_slice(
                builder, ir.Constant(i64, 0), nbytes, ir.Constant(i64, 64)
            ) as (off, _):
                # rw=1 (for writing), locality=3 (keep in all caches), data cache
                builder.call(
                    fn,
                    [
                        builder.gep(base, [off]),
                        ir.Constant(i32, 1),
                        ir.Constant(i32, 3),
                        ir.Constant(i32, 1),
                    ],
                )
            return context.get_dummy_value()

        return sig, codegen

    @njit
    def probe(a):
        prefetch(a, 0)

    try:
        probe(np.zeros((1, 4), np.float32))
    except Exception:  # pragma: no cover - a numba/llvmlite this was not written for

        @njit(inline="always")
        def prefetch(arr, row):  # noqa: F811
            pass

    return prefetch


prefetch = _define_prefetch()
