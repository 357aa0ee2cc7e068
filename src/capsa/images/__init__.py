"""Images: OCI image-spec content, a distribution-spec client, unpacking and snapshots."""
