"""Pieces every package shares and that import nothing of ours: the error tree, audio in and out,
sentence splitting, the models shipped in packages, and the base of every config section."""
