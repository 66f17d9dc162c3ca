"""What a notebook shows: the first cell, figures, the evaluation report, widgets, and the warning filters."""
