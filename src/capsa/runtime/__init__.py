"""capsa-runtime: an OCI runtime-spec implementation with runc's command line."""
