"""What a notebook shows: the first cell, figures, widgets, and the warning filters."""
