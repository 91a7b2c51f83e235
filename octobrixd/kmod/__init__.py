"""The patched uvcvideo: what the running kernel says about it."""
