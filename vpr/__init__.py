"""vpr: visual place recognition (NetVLAD, SARE, SFRS)."""
__version__ = "0.1.0"
