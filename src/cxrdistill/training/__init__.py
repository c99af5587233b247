"""Training: the loop, objectives, checkpoints, devices and the experiment runner."""
