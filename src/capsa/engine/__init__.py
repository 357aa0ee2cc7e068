"""The engine: containers from images, run through a shim and an OCI runtime, without a daemon."""
