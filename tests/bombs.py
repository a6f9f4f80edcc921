"""Compressed bombs: small bodies that decode to far more, as a hostile server would send them."""

from __future__ import annotations

import functools
import gzip
import zlib

MIB = 1024 * 1024


def gzip_bomb(decoded_mib: int = 1024, layers: int = 1) -> bytes:
    """`decoded_mib` MiB of zeros, gzipped `layers` times: one layer shrinks them ~1000 times
    (1 GiB → ~1 MB), a second layer to about 2 kB (`Content-Encoding: gzip, gzip`)."""
    return _bomb(decoded_mib, layers)  # one cache entry, however the arguments are spelled


@functools.cache
def _bomb(decoded_mib: int, layers: int) -> bytes:
    if layers > 1:
        return gzip.compress(_bomb(decoded_mib, layers - 1), 9)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    block = bytes(MIB)
    return b"".join(compressor.compress(block) for _ in range(decoded_mib)) + compressor.flush()
