"""OCI registry adapter: the distribution API client and image patching on top of it."""
