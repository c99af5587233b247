"""What training, evaluation and deployment all stand on: checkpoints, devices and precision, process groups."""
