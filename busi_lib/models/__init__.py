"""The networks of the course, where their weights come from, and the saved-model folder."""
