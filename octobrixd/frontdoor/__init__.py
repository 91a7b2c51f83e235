"""The front door: the farm login, the secrets nginx and the web service read, their sync."""
