"""Shared parts below every stage: errors, atomic io, progress, device, boxes, media, config,
checkpoints, the weights policy and the CLI's shared options. Nothing here imports a stage."""
