"""The crawler: discovers new uploads (RSS, uploads playlists, search) and refreshes their counters over time."""
