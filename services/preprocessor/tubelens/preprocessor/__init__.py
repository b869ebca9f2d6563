"""The preprocessor: videos.discovered in; validated, normalized thumbnails, frames and audio features out."""
