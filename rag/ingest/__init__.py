"""Documents in: read files and URLs, cut them into chunks, hand them to the index."""
