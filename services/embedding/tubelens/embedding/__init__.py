"""The embedding service: thumbnails and frames in; ImageNet embeddings, concepts and similar thumbnails out."""
