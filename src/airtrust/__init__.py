"""airtrust: make a private certificate authority work across an air-gapped
Kubernetes AI platform, end to end, and prove that it does."""
