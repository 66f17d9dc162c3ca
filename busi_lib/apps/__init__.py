"""What a user runs: the busi command, the notebook runner, predict, Grad-CAM, busi evaluate (external) and the
bench."""
