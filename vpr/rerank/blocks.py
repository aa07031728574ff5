"""Block sizes bounding the working memory of re-ranking (tests shrink them to exercise the block
boundaries; the code reads them from this module at call time)."""

BLOCK_ROWS = 512  # rows of P built at a time
SET_ROWS = 2048  # rows whose k-reciprocal sets are formed at a time
PAIR_BUDGET = 1 << 22  # (query non-zero, gallery non-zero) pairs processed at a time
OUT_ROWS = 512  # at most this many query rows of the result computed at a time
