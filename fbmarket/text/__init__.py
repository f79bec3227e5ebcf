"""Text branch: tokenising, Word2Vec, the Keras text encoder."""
