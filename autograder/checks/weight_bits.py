"""Close the weight channel: the low mantissa bits of model.pt are replaced before the worker sees them.

TRUSTED side.  A student can hide data in the low bits of ordinary weights (issue 17: a fingerprint
and the family of every NSynth test note, 25 bytes a note, in the low 8 bits of 119,691 float32
weights, moving no weight by more than 2.6e-5 relative), and a ``forward`` that reads them back
answers the public test notes from a lookup.  Before the held-out logits are computed, every
floating tensor keeps its sign, exponent and the top 7 mantissa bits (bfloat16's precision) and
gets the rest from a stream keyed per submission (``HMAC(secret, "weights", digest)``), so nothing
stored there survives and nobody without the secret can predict what replaces it.

What it costs: each weight moves by less than one bfloat16 step (2**-7 relative at most, 2**-8 on
average), about what training in bfloat16 does.  The reference's held-out accuracy moves by
less than the perturbation's own spread (measured in docs/benchmarks.md).  A payload above bit 16 would
have to survive a weight change of that size in every weight, which a trained model pays for in
accuracy; the private control split (``heldout_guard``) is what a lookup of public labels can't
buy at all.  Non-finite values and exact zeros are left as they are (an inf's mantissa is a NaN's).

Example
-------
>>> weights = {"w": np.array([1.0, -0.1234567, 0.0, np.inf], dtype=np.float32)}
>>> out = scramble(weights, key=b"k" * 32)
>>> bool(np.all(np.abs(out["w"][:2] - weights["w"][:2]) <= np.abs(weights["w"][:2]) * 2.0 ** -7))
True
>>> out["w"][2:].tolist(), scramble(weights, key=b"k" * 32)["w"].tolist() == out["w"].tolist()
([0.0, inf], True)
>>> bool(scramble(weights, key=b"j" * 32)["w"][1] != out["w"][1])   # another submission: other low bits
True
"""
from __future__ import annotations

import numpy as np

# dtype -> (unsigned view, mantissa bits replaced): keep bfloat16's 7 mantissa bits in each.
_LOW_BITS = {np.dtype(np.float32): (np.uint32, 16), np.dtype(np.float16): (np.uint16, 3),
             np.dtype(np.float64): (np.uint64, 45)}


def scramble(arrays: "dict[str, np.ndarray]", *, key: bytes) -> "dict[str, np.ndarray]":
    """New arrays with the low mantissa bits of every floating array replaced from ``key``'s stream
    (the same key, the same bits: a regrade reproduces the score); other dtypes unchanged."""
    rng = np.random.default_rng(int.from_bytes(key[:16], "little"))
    out = {}
    for name in sorted(arrays):  # a fixed order: the stream must not depend on the dict's
        array = arrays[name]
        spec = _LOW_BITS.get(array.dtype)
        if spec is None:
            out[name] = array
            continue
        unsigned, low = spec
        bits = np.ascontiguousarray(array).view(unsigned).copy()
        noise = rng.integers(0, 1 << low, size=bits.shape, dtype=unsigned)
        kept = bits & unsigned(~np.array((1 << low) - 1, dtype=unsigned))
        touched = np.isfinite(array) & (array != 0)
        bits = np.where(touched, kept | noise, bits)
        out[name] = bits.view(array.dtype).reshape(array.shape)
    return out
