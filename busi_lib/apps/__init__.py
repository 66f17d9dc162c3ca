"""What a user runs: the busi command, the notebook runner, predict, and Grad-CAM."""
