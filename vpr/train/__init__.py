"""Training: configuration, hard-negative mining, the NetVLAD/SARE and SFRS trainers, checkpoints."""
