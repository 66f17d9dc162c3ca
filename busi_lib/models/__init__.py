"""The networks of the course (the lesson networks and the registry) and where their weights come from."""
